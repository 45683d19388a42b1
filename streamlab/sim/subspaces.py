"""Simulated populations with a known low-dimensional subspace, for scoring the online
principal-subspace network (`sm`) against batch PCA and Bio-CCA (`biocca`) against batch CCA,
as `EVALUATION.md` asks: families whose parameters are drawn from the seed, with model
mismatch built in (counts through a nonlinearity, heteroscedastic noise, calcium kernels,
channels of very different scales, temporally correlated latents).

Every family draws from its seed the number of channels (10-200), the subspace size k (1-8),
the latent's time constants (samples are not independent, as in a recording), the spectrum of
the latent variances and the signal-to-noise ratio. Spectra (`SPECTRA`):

- `decaying`: latent variances falling geometrically (ratio 0.5-0.85 per dimension);
- `near_equal`: the top k variances within 5 % of each other (the subspace is well defined,
  the directions inside it are not);
- `small_gap`: one or two latent dimensions beyond k whose variance is only 1.3-2x below the
  k-th, so the gap at k is small.

The truth is the top-k principal subspace of the noise-free signal's covariance (for the
linear families exactly the span of the top k loadings). The signal has at most k + 2
dimensions and its k-th eigenvalue is at least 1.3x the next by construction, so the truth is
never ill-defined (equal eigenvalues across the k/k+1 boundary are not drawn: no method could
be scored on them). For the count and calcium families the signal is nonlinear in the latent,
so its covariance is estimated from a long independent draw of the same process
(`TRUTH_SAMPLES`).

PCA families (`PCA_FAMILIES`): `gaussian` (linear-Gaussian, isotropic or heteroscedastic
noise), `counts` (Poisson or gamma-Poisson counts of exp or softplus rates of the latent),
`calcium` (those counts convolved with an exponential kernel, scaled per cell, plus Gaussian
noise), `scaled` (`gaussian` with per-channel gains over two to three decades). CCA family
(`CCA_FAMILIES`): `two_views`, two views sharing a latent with canonical correlations of varied
strength, each view with its own structured (low-rank, strong) noise and isotropic noise.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import lfilter

from streamlab.errors import ConfigError

N_CHANNELS = (10, 200)  # inclusive range of the number of channels of x
K_RANGE = (1, 8)  # inclusive range of the subspace size k (at most n / 4)
N_SAMPLES = 6000  # default session length
SPECTRA = ("decaying", "near_equal", "small_gap")
SNR_RANGE = (0.5, 20.0)  # the k-th latent's eigenvalue over the mean noise variance (log-uniform)
TRUTH_SAMPLES = 20_000  # independent noise-free samples that estimate a nonlinear truth


@dataclass(frozen=True)
class SubspaceData:
    """One simulated session: samples x (T, n), the true k-dimensional subspace `basis` (n, k),
    and for CCA families the second view y (T, q) and the true canonical directions: `basis`
    and `basis_y` are then the filters w with w^T x (w^T y) a canonical variable.
    `pca_floor` is the subspace error of PCA of the population covariance (noise included)
    against the truth: what PCA reaches with unlimited samples, non-zero where the noise is
    heteroscedastic (model mismatch), so no online or batch PCA can do better."""

    x: np.ndarray
    basis: np.ndarray
    k: int
    family: str
    y: np.ndarray | None = None
    basis_y: np.ndarray | None = None
    pca_floor: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    def summary(self) -> str:
        """One line: family, sizes, spectrum and signal-to-noise ratio."""
        q = "" if self.y is None else f", q = {self.y.shape[1]}"
        return (
            f"{self.family}: {self.n_samples} samples, n = {self.x.shape[1]}{q}, k = {self.k}, "
            f"{self.params['spectrum']} spectrum, snr {self.params['snr']:.2g}"
        )


# -- shared pieces -------------------------------------------------------------------------------
def _generator(seed: int, family: str) -> np.random.Generator:
    """A generator for (seed, family): the same seed gives different draws in each family."""
    return np.random.default_rng([int(seed), zlib.crc32(family.encode())])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _ar1(rng: np.random.Generator, samples: int, taus: np.ndarray) -> np.ndarray:
    """Independent unit-variance AR(1) processes (samples, len(taus)), time constants in
    samples, stationary from the first sample."""
    a = np.exp(-1.0 / np.asarray(taus, dtype=np.float64))
    noise = rng.standard_normal((samples, len(a))) * np.sqrt(1.0 - a * a)
    noise[0] = rng.standard_normal(len(a))  # the stationary start
    return np.stack([lfilter([1.0], [1.0, -ai], noise[:, i]) for i, ai in enumerate(a)], axis=1)


def _exp_filter(x: np.ndarray, decay: float) -> np.ndarray:
    """c_t = decay c_{t-1} + x_t along axis 0 (an exponential kernel, as calcium indicators)."""
    return lfilter([1.0], [1.0, -decay], x, axis=0)


def _top_subspace(cov: np.ndarray, k: int) -> np.ndarray:
    """The top-k eigenvectors (n, k) of a symmetric matrix."""
    _, vectors = np.linalg.eigh(cov)
    return vectors[:, ::-1][:, :k]


def _pca_floor(population: np.ndarray, basis: np.ndarray) -> float:
    """The subspace error of the top principal subspace of a population covariance."""
    top = _top_subspace(population, basis.shape[1])
    q_f, q_u = top, np.linalg.qr(basis)[0]
    return float(np.linalg.norm(q_f @ q_f.T - q_u @ q_u.T) ** 2 / basis.shape[1])


def _orthonormal(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((n, d)))[0]


def _n_samples(n_samples: int | None) -> int:
    t = N_SAMPLES if n_samples is None else int(n_samples)
    if t < 10:
        raise ConfigError(f"n_samples must be at least 10, got {n_samples}")
    return t


@dataclass(frozen=True)
class _Latent:
    """What every family draws the same way: sizes, the latent's variances and time constants."""

    n: int
    k: int
    variances: np.ndarray  # (d,), d = k + extra, descending; the k-th is 1
    taus: np.ndarray  # (d,) time constants in samples
    snr: float
    params: dict[str, Any]


def _latent(rng: np.random.Generator) -> _Latent:
    """Draw n, k, the spectrum kind, the latent variances (scaled so the k-th is 1), their time
    constants (1-20 samples: consecutive samples are correlated as in a recording) and the
    signal-to-noise ratio."""
    n = int(rng.integers(N_CHANNELS[0], N_CHANNELS[1] + 1))
    k = int(rng.integers(K_RANGE[0], min(K_RANGE[1], max(1, n // 4)) + 1))
    spectrum = str(rng.choice(SPECTRA))
    extra = np.zeros(0)
    if spectrum == "decaying":
        variances = float(rng.uniform(0.5, 0.85)) ** np.arange(k)
    elif spectrum == "near_equal":
        variances = 1.0 - np.sort(rng.uniform(0.0, 0.05, k))
    else:
        variances = float(rng.uniform(0.6, 0.85)) ** np.arange(k)
        beyond = int(rng.integers(1, 3))
        extra = variances[-1] / rng.uniform(1.3, 2.0) * 0.7 ** np.arange(beyond)
    variances = np.concatenate([variances, extra]) / variances[-1]
    taus = _log_uniform(rng, 1.0, 20.0, len(variances))
    snr = float(_log_uniform(rng, *SNR_RANGE))
    params = {
        "n_channels": n,
        "k": k,
        "spectrum": spectrum,
        "latent_variances": variances,
        "latent_taus": taus,
        "snr": snr,
    }
    return _Latent(n, k, variances, taus, snr, params)


# -- PCA families --------------------------------------------------------------------------------
def _linear_gaussian(
    seed: int, n_samples: int | None, family: str, gain_decades: float
) -> SubspaceData:
    """x = (A z + noise) * gains + offsets; the truth is the top-k subspace of the scaled
    signal covariance (the span of the top k scaled loadings)."""
    rng = _generator(seed, family)
    lat = _latent(rng)
    t = _n_samples(n_samples)
    loadings = _orthonormal(rng, lat.n, len(lat.variances)) * np.sqrt(lat.variances)
    hetero = bool(rng.random() < 0.5)
    noise_var = np.exp(rng.normal(0.0, 0.3, lat.n)) if hetero else np.ones(lat.n)
    noise_var *= 1.0 / lat.snr / noise_var.mean()  # mean noise floor: the k-th variance / snr
    # spread capped at half the k-th signal variance: beyond it a noisy channel, not the signal,
    # is the population's k-th principal direction and the truth is ill-defined for PCA
    mean = noise_var.mean()
    noise_var = mean + (noise_var - mean) * min(1.0, 0.5 / max(noise_var.max() - mean, 1e-12))
    gains = 10.0 ** rng.uniform(0.0, gain_decades, lat.n)
    z = _ar1(rng, t, lat.taus)
    x = (z @ loadings.T + rng.standard_normal((t, lat.n)) * np.sqrt(noise_var)) * gains
    x += rng.normal(0.0, 3.0, lat.n) * gains  # channel offsets: the learner must centre
    signal = gains[:, None] * loadings
    basis = _top_subspace(signal @ signal.T, lat.k)
    population = signal @ signal.T + np.diag(noise_var * gains**2)
    floor = _pca_floor(population, basis)
    params = {**lat.params, "heteroscedastic": hetero, "gain_decades": gain_decades}
    return SubspaceData(x, basis, lat.k, family, pca_floor=floor, params=params)


def gaussian(seed: int, n_samples: int | None = None) -> SubspaceData:
    """Linear-Gaussian: x = A z + noise + offsets, z AR(1) latents; noise isotropic (half the
    seeds) or heteroscedastic (per-channel variances log-normal, sd 0.3: PCA's own mismatch)."""
    return _linear_gaussian(seed, n_samples, "gaussian", 0.0)


def scaled(seed: int, n_samples: int | None = None) -> SubspaceData:
    """`gaussian` with every channel multiplied by a gain spread over 2-3 decades (channels in
    different units); the truth is the span of the scaled loadings."""
    decades = float(_generator(seed, "scaled_decades").uniform(2.0, 3.0))
    return _linear_gaussian(seed, n_samples, "scaled", decades)


@dataclass(frozen=True)
class _CountModel:
    """Rates of a count population driven by the latent through a nonlinearity."""

    loadings: np.ndarray  # (n, d) log-rate loadings
    log_base: np.ndarray  # (n,) log baseline rate per bin
    link: str  # "exp" or "softplus"
    dispersion: np.ndarray  # (n,) gamma shape; inf: Poisson

    def rates(self, z: np.ndarray) -> np.ndarray:
        drive = z @ self.loadings.T
        if self.link == "exp":
            return np.exp(self.log_base + drive)
        # softplus with the same slope as exp at z = 0: saturating below, linear above
        return np.exp(self.log_base) * np.logaddexp(0.0, 1.0 + drive) / np.logaddexp(0.0, 1.0)

    def counts(self, rng: np.random.Generator, rates: np.ndarray) -> np.ndarray:
        mean = rates.copy()
        over = np.isfinite(self.dispersion)
        if over.any():
            shape = self.dispersion[over]
            mean[:, over] *= rng.gamma(shape, 1.0 / shape, size=(len(mean), int(over.sum())))
        return rng.poisson(mean).astype(np.float64)


def _count_model(rng: np.random.Generator, lat: _Latent) -> tuple[_CountModel, dict[str, Any]]:
    """Baseline rates 0.2-3 per bin (log-normal spread across neurons), log-rate loadings scaled
    so that the k-th latent's eigenvalue in the rates' covariance is about snr x the mean Poisson
    variance (capped where the log rate's sd would pass 1), an exp or softplus link, and
    gamma-Poisson noise (Fano factor 1.05-1.5 at baseline) for a random share of the neurons."""
    base = _log_uniform(rng, 0.2, 3.0) * np.exp(rng.normal(0.0, 0.7, lat.n))
    over_share = float(rng.uniform(0.0, 1.0))
    shapes = _log_uniform(rng, 2.0, 20.0, lat.n) * base  # Fano factor 1 + r / shape: 1.05-1.5
    dispersion = np.where(rng.random(lat.n) < over_share, shapes, np.inf)
    noise = base + base**2 / dispersion  # count variance per neuron at the baseline rate
    # eigenvalue_k ~ c^2 n mean(r^2) for a per-channel log-rate sd c of the k-th latent
    c = float(np.sqrt(lat.snr * noise.mean() / (lat.n * np.mean(base**2))))
    c = min(c, 1.0 / float(np.sqrt(lat.variances.sum())))
    loadings = _orthonormal(rng, lat.n, len(lat.variances)) * np.sqrt(lat.variances * lat.n) * c
    link = str(rng.choice(["exp", "softplus"]))
    params = {"link": link, "log_rate_sd_k": c, "overdispersed_share": over_share}
    return _CountModel(loadings, np.log(base), link, dispersion), params


def counts(seed: int, n_samples: int | None = None) -> SubspaceData:
    """Poisson / gamma-Poisson spike counts of rates exp or softplus of a linear function of the
    latent (heteroscedastic, nonlinear: PCA's model does not hold); the truth is the top-k
    subspace of the rates' covariance."""
    rng = _generator(seed, "counts")
    lat = _latent(rng)
    t = _n_samples(n_samples)
    model, extra = _count_model(rng, lat)
    x = model.counts(rng, model.rates(_ar1(rng, t, lat.taus)))
    truth_rates = model.rates(_ar1(rng, TRUTH_SAMPLES, lat.taus))
    basis = _top_subspace(np.cov(truth_rates.T), lat.k)
    floor = _pca_floor(np.cov(model.counts(rng, truth_rates).T), basis)
    params = {**lat.params, **extra}
    return SubspaceData(x, basis, lat.k, "counts", pca_floor=floor, params=params)


def calcium(seed: int, n_samples: int | None = None) -> SubspaceData:
    """The counts of `counts` convolved with an exponential kernel (decay 0.7-0.97 per sample),
    times a per-cell amplitude (0.5-2), plus Gaussian noise (sd 0.1-0.5 of the cell's trace sd),
    like dF/F; the truth is the top-k subspace of the convolved rates' covariance."""
    rng = _generator(seed, "calcium")
    lat = _latent(rng)
    t = _n_samples(n_samples)
    model, extra = _count_model(rng, lat)
    decay = float(rng.uniform(0.7, 0.97))
    amplitude = rng.uniform(0.5, 2.0, lat.n)
    spikes = model.counts(rng, model.rates(_ar1(rng, t, lat.taus)))
    trace = _exp_filter(spikes, decay) * amplitude
    noise_share = float(rng.uniform(0.1, 0.5))
    noise_sd = noise_share * trace.std(0)
    x = trace + rng.standard_normal(trace.shape) * noise_sd
    rates = model.rates(_ar1(rng, TRUTH_SAMPLES, lat.taus))
    truth = _exp_filter(rates, decay) * amplitude
    basis = _top_subspace(np.cov(truth[200:].T), lat.k)  # past the kernel's start-up
    noisy = _exp_filter(model.counts(rng, rates), decay) * amplitude
    noisy += rng.standard_normal(noisy.shape) * noise_sd
    floor = _pca_floor(np.cov(noisy[200:].T), basis)
    params = {**lat.params, **extra, "decay": decay, "noise_share": noise_share}
    return SubspaceData(x, basis, lat.k, "calcium", pca_floor=floor, params=params)


# -- CCA family ----------------------------------------------------------------------------------
def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(values)) @ vectors.T


def cca_directions(
    cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k canonical directions (n, k) and (q, k), and all canonical correlations, of the
    covariances (the population's: the truth; a sample's: batch CCA)."""
    wx, wy = _inverse_sqrt(cxx), _inverse_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ cxy @ wy)
    return wx @ u[:, :k], wy @ vt.T[:, :k], s


def two_views(seed: int, n_samples: int | None = None) -> SubspaceData:
    """Two views x (10-200 channels) and y (k+1 to 40 channels) of a shared AR(1) latent of k to
    k + 2 dimensions (the drawn spectrum), each view with its own structured noise (1-5 AR(1)
    latents, 1-4x the shared signal's variance, on random loadings) and isotropic noise that
    sets the k-th canonical correlation to about 0.3-0.9; the truth is the population CCA of
    these covariances (its correlations are in `params`)."""
    rng = _generator(seed, "two_views")
    lat = _latent(rng)
    t = _n_samples(n_samples)
    k, d = lat.k, len(lat.variances)
    q = int(rng.integers(k + 1, 41))
    rho_k = float(rng.uniform(0.3, 0.9))  # about the k-th shared dimension's correlation
    noise_var = (1.0 - rho_k) / rho_k  # isotropic noise against the k-th latent's unit variance
    z = _ar1(rng, t, lat.taus)
    views, covariances, loadings, own_dims = [], [], [], []
    for size in (lat.n, q):
        shared = _orthonormal(rng, size, d) * np.sqrt(lat.variances)
        own = int(rng.integers(1, 6))
        own_var = lat.variances.sum() / own * rng.uniform(1.0, 4.0, own)
        own_loadings = _orthonormal(rng, size, own) * np.sqrt(own_var)
        u = _ar1(rng, t, _log_uniform(rng, 1.0, 20.0, own))
        noise = rng.standard_normal((t, size)) * np.sqrt(noise_var)
        views.append(z @ shared.T + u @ own_loadings.T + noise)
        covariances.append(
            shared @ shared.T + own_loadings @ own_loadings.T + noise_var * np.eye(size)
        )
        loadings.append(shared)
        own_dims.append(own)
    bx, by, corr = cca_directions(*covariances, loadings[0] @ loadings[1].T, k)
    params = {
        **lat.params,
        "n_channels_y": q,
        "canonical_correlations": corr[: d + 1],
        "own_dims": own_dims,
    }
    return SubspaceData(views[0], bx, k, "two_views", y=views[1], basis_y=by, params=params)


# -- offline baselines on the same samples ------------------------------------------------------
def batch_pca(x: np.ndarray, k: int) -> np.ndarray:
    """Batch PCA of the samples: the top-k principal directions (n, k) of the centred data."""
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return vt[:k].T


def batch_cca(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch CCA of the samples (no regularisation): the top-k canonical directions of x and y."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    t = len(x)
    wx, wy, _ = cca_directions(xc.T @ xc / t, yc.T @ yc / t, xc.T @ yc / t, k)
    return wx, wy


PCA_FAMILIES: dict[str, Callable[..., SubspaceData]] = {
    "gaussian": gaussian,
    "counts": counts,
    "calcium": calcium,
    "scaled": scaled,
}
CCA_FAMILIES: dict[str, Callable[..., SubspaceData]] = {"two_views": two_views}
FAMILIES: dict[str, Callable[..., SubspaceData]] = {**PCA_FAMILIES, **CCA_FAMILIES}

"""Decoders scored as `EVALUATION.md` asks: labels for a calibration part, none after, and the
score on the decoded part only, beside offline baselines fit on the calibration part alone.

The baselines, each computed from the same input and labels:
- `mean`: the calibration labels' mean (a decoder that learned nothing from the neurons);
- `ridge`: ridge regression on square-root counts with causal lags, the number of lags and the
  penalty chosen by blocked cross-validation inside the calibration part;
- `kalman`: the classical Kalman decoder (`KalmanFilter.fit`) fit on the calibration part and
  run over the whole stream;
and, for each online decoder, its shift control: the same learner run again with the input
circularly shifted against the labels (by the shift between a quarter and three quarters of
the stream at which the labels are least self-correlated), whose score must collapse.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from streamlab.dashboard.feed import DECODER_CLASSES, resolve_channels
from streamlab.errors import ConfigError, InputShapeError

LAG_CHOICES = (1, 2, 3, 5, 8)  # samples of history the ridge baseline may use
PENALTIES = tuple(10.0**p for p in np.arange(-2.0, 5.01, 0.5))  # relative to the mean eigenvalue
CV_FOLDS = 5


# -- scores --------------------------------------------------------------------------------------
def r2_scores(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """R² per target column: 1 - SSE / SST, SST around the truth's own mean on the same rows
    (so predicting that mean scores 0, and a worse guess scores below 0)."""
    truth, predicted = _as_2d(truth), _as_2d(predicted)
    if truth.shape != predicted.shape:
        raise InputShapeError(f"truth {truth.shape} and prediction {predicted.shape} differ")
    sse = ((truth - predicted) ** 2).sum(0)
    sst = ((truth - truth.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)


def median_abs_error(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Median over samples and targets of |truth - prediction|."""
    return float(np.median(np.abs(_as_2d(truth) - _as_2d(predicted))))


@dataclass
class Score:
    """One decoder's (or baseline's) score on the decoded part."""

    name: str
    r2: np.ndarray
    mae: float
    note: str = ""

    @property
    def mean_r2(self) -> float:
        return float(np.nanmean(self.r2)) if np.isfinite(self.r2).any() else float("nan")


def score(name: str, truth: np.ndarray, predicted: np.ndarray, note: str = "") -> Score:
    """`Score` of `predicted` against `truth`; rows with a non-finite prediction or truth count as
    predicting the truth's mean would not: they are scored as the worst of the finite ones."""
    truth, predicted = _as_2d(truth), _as_2d(predicted)
    bad = ~np.isfinite(predicted).all(1)
    if bad.any():
        note = (note + "; " if note else "") + f"{int(bad.sum())} non-finite outputs"
        predicted = predicted.copy()
        predicted[bad] = truth.mean(0) + 10 * truth.std(0)  # a miss, not a silent drop
    return Score(name, r2_scores(truth, predicted), median_abs_error(truth, predicted), note)


# -- features ------------------------------------------------------------------------------------
def root_counts(x: np.ndarray) -> np.ndarray:
    """Square root of counts (variance-stabilising for Poisson counts); input with negative
    values (dF/F, z-scored data) is returned as it is."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(x) if (x >= 0).all() else x


def lagged(x: np.ndarray, lags: int) -> np.ndarray:
    """[x_t, x_{t-1}, ..., x_{t-lags+1}] per row (T, n * lags), causal; rows before the start
    repeat the first sample."""
    x = np.asarray(x, dtype=np.float64)
    blocks = [x]
    for lag in range(1, lags):
        shifted = np.empty_like(x)
        shifted[lag:] = x[:-lag]
        shifted[:lag] = x[0]
        blocks.append(shifted)
    return np.concatenate(blocks, axis=1)


# -- baselines -----------------------------------------------------------------------------------
@dataclass
class RidgeDecoder:
    """Linear decoder on lagged square-root counts, fit by ridge regression."""

    lags: int
    penalty: float
    weights: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    cv_r2: float = float("nan")

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        lag_choices: Sequence[int] = LAG_CHOICES,
        penalties: Sequence[float] = PENALTIES,
        folds: int = CV_FOLDS,
    ) -> RidgeDecoder:
        """Choose lags and penalty by blocked `folds`-fold cross-validation on (x, y) (contiguous
        blocks: neighbouring samples are correlated, shuffled folds would leak), then refit on
        all of it. The penalty is relative to the mean eigenvalue of the features' covariance."""
        x, y = root_counts(x), _as_2d(y)
        if len(x) != len(y) or len(x) < 2 * folds:
            raise InputShapeError(
                f"ridge needs x and y with the same number of rows (>= {2 * folds}), "
                f"got {len(x)} and {len(y)}"
            )
        best = (-np.inf, lag_choices[0], penalties[0])
        edges = np.linspace(0, len(x), folds + 1).astype(int)
        for lags in lag_choices:
            features = lagged(x, lags)
            sse = np.zeros(len(penalties))
            sst = 0.0
            for lo, hi in itertools.pairwise(edges):
                train = np.r_[0:lo, hi : len(x)]
                fold = _RidgePath(features[train], y[train])
                truth = y[lo:hi]
                sst += float(((truth - y[train].mean(0)) ** 2).sum())
                for i, penalty in enumerate(penalties):
                    sse[i] += float(((truth - fold.predict(features[lo:hi], penalty)) ** 2).sum())
            i = int(np.argmin(sse))
            cv = 1.0 - sse[i] / max(sst, 1e-300)
            if cv > best[0]:
                best = (cv, lags, penalties[i])
        cv, lags, penalty = best
        path = _RidgePath(lagged(x, lags), y)
        return cls(lags, penalty, path.weights(penalty), path.x_mean, path.y_mean, cv)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Decoded y (T, q) for the whole input x (T, n) (lags need the samples before)."""
        return (lagged(root_counts(x), self.lags) - self.x_mean) @ self.weights + self.y_mean


class _RidgePath:
    """Ridge solutions of one design for many penalties from one eigendecomposition."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_mean, self.y_mean = x.mean(0), y.mean(0)
        xc, yc = x - self.x_mean, y - self.y_mean
        gram = xc.T @ xc / len(x)
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(gram)
        self.scale = max(float(self.eigenvalues.mean()), 1e-12)
        self.projected = self.eigenvectors.T @ (xc.T @ yc / len(x))

    def weights(self, penalty: float) -> np.ndarray:
        shrink = 1.0 / (np.maximum(self.eigenvalues, 0.0) + penalty * self.scale)
        return self.eigenvectors @ (shrink[:, None] * self.projected)

    def predict(self, x: np.ndarray, penalty: float) -> np.ndarray:
        return (x - self.x_mean) @ self.weights(penalty) + self.y_mean


def kalman_baseline(x: np.ndarray, y: np.ndarray, calibration: int) -> np.ndarray:
    """The classical Kalman decoder (Wu et al.: linear dynamics of y, x linear in y with diagonal
    noise) on square-root counts, fit on the first `calibration` rows and run over all rows;
    returns its estimate at each row."""
    from streamlab.learners.control import KalmanFilter

    features = root_counts(x)
    y = _as_2d(y)
    kf = KalmanFilter.fit(features[:calibration], y[:calibration], device="cpu", dtype="float64")
    out = np.empty((len(features), y.shape[1]))
    batch = torch.from_numpy(features)
    for t in range(len(features)):
        out[t] = kf.step(batch[t]).numpy()
    return out


# -- online decoders -----------------------------------------------------------------------------
def run_decoder(
    learner: object,
    x: np.ndarray,
    y: np.ndarray,
    calibration: int,
    feedback_every: int | None = None,
) -> np.ndarray:
    """Step `learner` over x (T, n), with y for the first `calibration` rows and a NaN label
    after (predict only), except, with `feedback_every` k, every k-th row after calibration
    (intermittent feedback: each such row is still decoded before its label is learned from);
    returns its decode per row (`decode_of`)."""
    x = np.asarray(x, dtype=np.float64)
    y = _as_2d(y)
    unlabelled = np.full(y.shape[1], np.nan)
    rows = []
    for t in range(len(x)):
        labelled = t < calibration or (
            feedback_every is not None and (t - calibration) % feedback_every == feedback_every - 1
        )
        returned = learner.step(x[t], y[t] if labelled else unlabelled)  # type: ignore[attr-defined]
        rows.append(decode_of(learner, returned))
    return np.asarray(rows, dtype=np.float64).reshape(len(x), -1)


def decode_of(learner: object, returned: torch.Tensor) -> np.ndarray:
    """A decoder's decode of the sample it just stepped: what `step` returned, or, for a learner
    that decodes through an extra output (the rEFH's readout), that output."""
    if DECODERS.get(type(learner).__name__) == "readout":
        returned = learner.extra_outputs()["readout"][0]  # type: ignore[attr-defined]
    return returned.detach().cpu().numpy()


def control_shift(y: np.ndarray) -> int:
    """The circular shift, between a quarter and three quarters of the stream, at which the
    labels are least correlated with themselves (the largest |autocorrelation| over targets is
    smallest). A shift by about a period of repeated behaviour (laps on a track) keeps spikes
    and labels related, and a control made with it would credit a decoder for that."""
    y = _as_2d(np.asarray(y, dtype=np.float64))
    z = (y - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), 1.0)
    candidates = np.arange(len(y) // 4, 3 * len(y) // 4 + 1)
    spectrum = np.fft.rfft(z, n=len(z), axis=0)
    autocorrelation = np.fft.irfft(spectrum * spectrum.conj(), n=len(z), axis=0) / len(z)
    worst = np.abs(autocorrelation[candidates]).max(axis=1)
    return int(candidates[int(np.argmin(worst))])


def shifted(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x circularly shifted against the labels `y` by `control_shift(y)` rows: the input of a
    decoder's shift control, whose score must collapse."""
    return np.roll(x, control_shift(y), axis=0)


# -- a whole table -------------------------------------------------------------------------------
@dataclass
class DecodingTable:
    """Every decoder and baseline on one stream's decoded part."""

    n_calibration: int
    n_decoded: int
    targets: list[str]
    rows: list[Score] = field(default_factory=list)

    def get(self, name: str) -> Score:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def format(self) -> str:
        """Plain-text table: R² per target and mean, median absolute error."""
        head = ["decoder", *(f"R² {t}" for t in self.targets), "R² mean", "median |err|"]
        lines = [head]
        for row in self.rows:
            lines.append(
                [
                    row.name,
                    *(f"{v:.3f}" for v in row.r2),
                    f"{row.mean_r2:.3f}",
                    f"{row.mae:.4g}",
                ]
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        text = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
            for line in lines
        ]
        notes = [f"  {row.name}: {row.note}" for row in self.rows if row.note]
        return "\n".join(
            [
                f"calibration {self.n_calibration:,d} samples, decoded {self.n_decoded:,d} samples",
                *text,
                *(["notes:", *notes] if notes else []),
            ]
        )


def baseline_scores(x: np.ndarray, y: np.ndarray, calibration: int) -> list[Score]:
    """The mean, ridge and Kalman baselines, each fit on rows [0, calibration) and scored on
    the rest."""
    y = _as_2d(y)
    check_split(len(x), calibration)
    truth = y[calibration:]
    mean = np.broadcast_to(y[:calibration].mean(0), truth.shape)
    ridge = RidgeDecoder.fit(x[:calibration], y[:calibration])
    kalman = kalman_baseline(x, y, calibration)
    return [
        score("baseline: calibration mean", truth, mean),
        score(
            "baseline: ridge",
            truth,
            ridge.predict(x)[calibration:],
            f"sqrt counts, {ridge.lags} lag(s), penalty {ridge.penalty:.3g} (CV R² "
            f"{ridge.cv_r2:.2f} in calibration)",
        ),
        score("baseline: Kalman (offline)", truth, kalman[calibration:]),
    ]


def check_split(n: int, calibration: int) -> None:
    """A calibration part and a decoded part, each long enough to fit and to score."""
    if calibration < 2 * CV_FOLDS or n - calibration < 2:
        raise ConfigError(
            f"scoring needs at least {2 * CV_FOLDS} calibration samples and 2 decoded ones, got "
            f"{calibration} and {n - calibration}: calibrate for longer, or run for longer"
        )


def _as_2d(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


# -- a run store ---------------------------------------------------------------------------------
# where each decoder class puts its decode: the learners the dashboard draws as decoders, in
# their output; the rEFH in its readout (its output is its hidden means)
DECODERS = dict.fromkeys(DECODER_CLASSES, "output") | {"RecurrentEFH": "readout"}


def score_store(path: str, shift_control: bool = True) -> dict[str, DecodingTable]:
    """Each decoder of the run at `path`, scored on the part after calibration beside the
    baselines fit on the recorded input and labels of the calibration part (and, with
    `shift_control`, the decoder rerun on circularly shifted input). Needs a run made with
    `--calibrate` and `--record-input`."""
    from streamlab.learners.registry import learner_targets, name_specs
    from streamlab.store.run_store import RunStore

    store = RunStore.open(path)
    attrs = store.attrs
    config = attrs["streamlab"]["config"]
    specs = name_specs(config.get("learners") or [])
    targets = learner_targets(list(specs.values()))
    decoders = {
        name: store.learner(name).group.attrs.get("learner", {}).get("class", "?")
        for name in store.learner_names()
        if name in targets
    }
    decoders = {name: cls for name, cls in decoders.items() if cls in DECODERS}
    if not decoders:
        raise ConfigError(
            f"{path}: no decoder to score (a learner among {sorted(DECODERS)} given y=...)"
        )
    if config.get("calibrate") is None:
        raise ConfigError(
            f"{path}: the decoders got y at every sample, so a score would measure how well they "
            "follow y, not how well they decode; rerun with --calibrate SECONDS"
        )
    if not store.has_input or store.input().rows == 0:
        raise ConfigError(f"{path}: the input was not recorded; rerun with --record-input")
    table = store.input()
    seq = table.read("seq").astype(np.int64)
    data = table.read("data").astype(np.float64)
    stream = attrs.get("stream") or {}
    names = (stream.get("meta") or {}).get("channels")
    names = [str(c) for c in names] if isinstance(names, list) else None
    end_seq = _calibration_end_seq(attrs, table.read("t").astype(np.float64), seq, config)
    calibration = int(np.searchsorted(seq, end_seq))
    check_split(len(seq), calibration)
    tables: dict[str, DecodingTable] = {}
    baselines: dict[tuple[int, ...], list[Score]] = {}
    for name, cls in decoders.items():
        y_names = [str(c) for c in targets[name]]
        y_index = resolve_channels(y_names, names, data.shape[1])
        x_index = [c for c in range(data.shape[1]) if c not in y_index]
        x, y = data[:, x_index], data[:, y_index]
        key = tuple(y_index)
        if key not in baselines:
            baselines[key] = baseline_scores(x, y, calibration)
        learner_table = store.learner(name)
        out_seq = learner_table.read("seq").astype(np.int64)
        decoded = learner_table.read(DECODERS[cls]).astype(np.float64)
        where = np.searchsorted(out_seq, seq[calibration:])
        clipped = np.minimum(where, len(out_seq) - 1)
        found = (where < len(out_seq)) & (out_seq[clipped] == seq[calibration:])
        predicted = np.full((len(seq) - calibration, y.shape[1]), np.nan)
        predicted[found] = decoded[where[found], : y.shape[1]]
        rows = [score(name, y[calibration:], predicted)]
        if shift_control:
            learner = specs[name].build(device="cpu", seed=config.get("seed"))
            control = run_decoder(learner, shifted(x, y), y, calibration)
            rows.append(score(f"{name} (shift control)", y[calibration:], control[calibration:]))
        tables[name] = DecodingTable(
            calibration, len(seq) - calibration, y_names, [*rows, *baselines[key]]
        )
    return tables


def _calibration_end_seq(attrs: dict, t: np.ndarray, seq: np.ndarray, config: dict) -> int:
    """The first decoded sample's seq: as the run recorded it, else from the recorded times."""
    stored = attrs.get("calibration")
    if stored and stored.get("end_seq") is not None:
        return int(stored["end_seq"])
    end_t = t[0] + float(config["calibrate"])
    i = int(np.searchsorted(t, end_t))
    if i >= len(seq):
        raise ConfigError(
            f"the run ended before its calibration did ({config['calibrate']} s): nothing was "
            "decoded; run for longer or calibrate for less"
        )
    return int(seq[i])

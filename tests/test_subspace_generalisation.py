"""The subspace learners on data they were not tuned to (issue 20): `sm` (online PSP) against
batch PCA and `biocca` against batch CCA of the same samples, at their defaults, on ten seeds of
each family of `streamlab.sim.subspaces` (10-200 channels, k 1-8, decaying / near-equal /
small-gap spectra, signal-to-noise 0.5-20, counts, calcium, scaled channels, two views with
structured noise). Errors are `subspace_error` against the true generating subspace. The full
sweep, with longer sessions and several sample counts, is `benchmarks/subspace_science.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamlab.learners.similarity import BioCCA, SimilarityMatching, subspace_error
from streamlab.sim.subspaces import PCA_FAMILIES, batch_cca, batch_pca, two_views

SEEDS = range(10)
PCA_SAMPLES = 6000  # shorter than the benchmark's 20,000, to fit the suite
CCA_SAMPLES = 6000


@pytest.mark.parametrize("family", sorted(PCA_FAMILIES))
def test_sm_tracks_batch_pca_on_every_family(family: str) -> None:
    """6,000 samples streamed once through `sm` at its defaults (n_components = k, burn-in
    batch PCA of the first 2,000 samples, summed as co-moments): its subspace error is within
    0.03 of batch PCA's on the same samples at the median and within 0.15 on every seed
    (measured worst gaps at 6,000: gaussian 0.02, calcium 0.02, scaled 0.11, counts 0.13). The
    issue's target, within 0.1 on every seed, holds in the benchmark's 20,000-sample sessions
    (all 40 seeds; worst gap 0.05) but not at 6,000 on two seeds, where batch PCA keeps
    resolving small eigengaps after the burn-in and the network follows them slowly. With the
    old burn-in of 2 n samples two seeds stayed 0.14 behind even at 20,000. On `counts` and
    `scaled` both errors are far from 0: PCA's own bias under heteroscedastic noise (the
    family's `pca_floor`), not the learner's."""
    gaps = []
    for seed in SEEDS:
        data = PCA_FAMILIES[family](seed, n_samples=PCA_SAMPLES)
        sm = SimilarityMatching(n_components=data.k, device="cpu", seed=0)
        for row in torch.from_numpy(data.x.astype(np.float32)):
            sm.step(row)
        online = subspace_error(sm.filters[0].numpy(), data.basis)
        batch = subspace_error(batch_pca(data.x, data.k).T, data.basis)
        gaps.append(online - batch)
        print(f"\n{family} seed {seed}: sm {online:.3f}, batch PCA {batch:.3f} ({data.summary()})")
    assert np.median(gaps) <= 0.03
    assert max(gaps) <= 0.15


def test_biocca_against_batch_cca_on_two_views() -> None:
    """6,000 samples of two views through `biocca` at its defaults (n_components = k; burn-in
    batch CCA of the first 2,000 samples, then steps decaying as eta / (1 + 5e-4 t)): within
    0.1 of batch CCA's subspace error on every seed, the issue's target (measured: median gap
    0.02, worst 0.05; with the old burn-in of 2 (n + q) samples and decay 1e-4, 0.21 and 0.38,
    and without a burn-in 0.27 and 0.68)."""
    gaps, errors = [], []
    for seed in SEEDS:
        data = two_views(seed, n_samples=CCA_SAMPLES)
        assert data.y is not None and data.basis_y is not None
        learner = BioCCA(n_components=data.k, device="cpu", seed=0)
        x = torch.from_numpy(data.x.astype(np.float32))
        y = torch.from_numpy(data.y.astype(np.float32))
        for t in range(len(x)):
            learner.step(x[t], y[t])
        vx, vy = (v[0].numpy() for v in learner.filters)
        bx, by = batch_cca(data.x, data.y, data.k)
        online = 0.5 * (subspace_error(vx.T, data.basis) + subspace_error(vy.T, data.basis_y))
        batch = 0.5 * (subspace_error(bx.T, data.basis) + subspace_error(by.T, data.basis_y))
        errors.append(online)
        gaps.append(online - batch)
        print(f"\ntwo_views seed {seed}: biocca {online:.3f}, batch CCA {batch:.3f}")
    assert max(errors) < 1.0
    assert np.median(gaps) <= 0.05
    assert max(gaps) <= 0.1

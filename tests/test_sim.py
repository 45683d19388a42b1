"""The simulated rig: deterministic for a seed whatever the block size, firing at the rate it
was asked for, and a calcium variant that is a smoothed, noisy function of the same spikes."""

from __future__ import annotations

import numpy as np
import pytest

from streamlab.errors import ConfigError
from streamlab.sim.lds import LatentPoissonPopulation


def test_generation_is_independent_of_block_size() -> None:
    whole, latents = LatentPoissonPopulation(n_neurons=10, seed=4).sample(1000)
    pieces = LatentPoissonPopulation(n_neurons=10, seed=4)
    parts = [pieces.sample(n) for n in (1, 99, 400, 500)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), latents)


def test_rates_and_latent_statistics_match_the_parameters() -> None:
    population = LatentPoissonPopulation(n_neurons=50, rate=100.0, firing_rate=20.0, seed=0)
    counts, latents = population.sample(60_000)
    assert counts.dtype == np.dtype("<u2")
    # stationary latent variance is 1 by construction of Q
    np.testing.assert_allclose(latents.var(0), 1.0, rtol=0.25)
    expected_rate = np.exp(population.b + 0.5 * (population.C**2).sum(1)) * population.rate
    np.testing.assert_allclose(counts.mean(0) * population.rate, expected_rate, rtol=0.25)
    eigenvalues = np.abs(np.linalg.eigvals(population.A))
    assert (eigenvalues < 1).all()


def test_calcium_is_smooth_noisy_and_float() -> None:
    population = LatentPoissonPopulation(n_neurons=5, rate=30.0, seed=1, kind="calcium")
    dff, _ = population.sample(3000)
    assert dff.dtype == np.dtype("<f4") and np.isfinite(dff).all()
    lag1 = np.mean([np.corrcoef(dff[:-1, i], dff[1:, i])[0, 1] for i in range(5)])
    assert lag1 > 0.5  # the indicator kernel makes successive frames correlated


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="kind"):
        LatentPoissonPopulation(kind="lfp")
    with pytest.raises(ConfigError):
        LatentPoissonPopulation(n_neurons=0)

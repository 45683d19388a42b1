"""Streams for the reservoir readouts' paradigms (papers/README.md section 3): a sum of
sinusoids to learn from a periodic drive, and the cue -> delayed stimulus "what and when" task
with outcome probabilities, whose delay and probabilities may change mid-stream.

All arrays are per stream bin, (T, B, ...) for B independent streams (each with its own draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamlab.errors import ConfigError


def sum_of_sinusoids(
    steps: int,
    batch: int = 1,
    period_bins: float = 25.0,
    amplitudes: tuple[float, ...] = (1.0, 0.5, 0.25),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Drive (T, B, 2) = (cos, sin) of the base phase 2 pi t / period_bins, and the target
    (T, B, 1) = sum_h amplitudes[h] sin((h + 1) 2 pi t / period_bins + phase[b, h]) with random
    phases per stream (the first harmonic's 0): the higher harmonics are not in the drive, so the
    reservoir's nonlinearity has to make them, and each stream has its own target."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, (batch, len(amplitudes)))
    phases[:, 0] = 0.0
    angle = 2 * np.pi * np.arange(steps) / period_bins
    drive = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    target = np.zeros((steps, batch, 1))
    for h, amplitude in enumerate(amplitudes):
        target[:, :, 0] += amplitude * np.sin((h + 1) * angle[:, None] + phases[:, h])
    drive = np.repeat(drive[:, None, :], batch, axis=1)
    return drive.astype(np.float32), target.astype(np.float32)


@dataclass(frozen=True)
class Block:
    """A block of trials with one schedule: `trials` trials whose stimulus comes `delay_bins`
    after the cue, outcome k with probability `probabilities[k]` (the rest: no stimulus)."""

    trials: int
    delay_bins: int
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class WhatAndWhen:
    """A what-and-when stream: `cue` (T, B, 1), `stimulus` (T, B, K) one-hot of the outcome at
    its bin, `gate` (T, B, 1) (1 from the cue to `gate_after` bins past the stimulus bin, the
    relevant window; 0 in the inter-trial interval), `trial` (T,) the trial index of each bin and
    `delay` (n_trials,) and `probabilities` (n_trials, K) of each trial's schedule."""

    cue: np.ndarray
    stimulus: np.ndarray
    gate: np.ndarray
    trial: np.ndarray
    delay: np.ndarray
    probabilities: np.ndarray
    trial_bins: int
    cue_bin: int

    def target(self, gated: bool = True) -> np.ndarray:
        """y for a readout: stimuli, with the gate as last column if `gated`."""
        return np.concatenate([self.stimulus, self.gate], axis=2) if gated else self.stimulus


def what_and_when(
    blocks: list[Block],
    batch: int = 1,
    trial_bins: int = 40,
    cue_bin: int = 2,
    gate_after: int = 3,
    seed: int = 0,
) -> WhatAndWhen:
    """Simulate the cue -> delayed stimulus paradigm: every trial is `trial_bins` bins, a cue
    at `cue_bin`, then (with the block's probabilities) one of K outcomes at cue_bin + delay.
    Each of the B streams draws its own outcomes."""
    if not blocks:
        raise ConfigError("give at least one Block")
    k = len(blocks[0].probabilities)
    rng = np.random.default_rng(seed)
    n_trials = sum(b.trials for b in blocks)
    steps = n_trials * trial_bins
    cue = np.zeros((steps, batch, 1), np.float32)
    stimulus = np.zeros((steps, batch, k), np.float32)
    gate = np.zeros((steps, batch, 1), np.float32)
    delays = np.empty(n_trials, int)
    probs = np.empty((n_trials, k))
    trial = 0
    for block in blocks:
        p = np.asarray(block.probabilities, float)
        if len(p) != k or p.min() < 0 or p.sum() > 1 + 1e-9:
            raise ConfigError(f"probabilities {block.probabilities} must be {k} values, sum <= 1")
        stim_bin = cue_bin + block.delay_bins
        if block.delay_bins <= 0 or stim_bin >= trial_bins:
            raise ConfigError(f"delay_bins {block.delay_bins} does not fit in {trial_bins} bins")
        choices = np.append(p, 1 - p.sum())
        for _ in range(block.trials):
            start = trial * trial_bins
            cue[start + cue_bin] = 1.0
            gate[start + cue_bin : min(start + stim_bin + gate_after + 1, start + trial_bins)] = 1.0
            outcome = rng.choice(k + 1, size=batch, p=choices / choices.sum())
            for b in range(batch):
                if outcome[b] < k:
                    stimulus[start + stim_bin, b, outcome[b]] = 1.0
            delays[trial] = block.delay_bins
            probs[trial] = p
            trial += 1
    return WhatAndWhen(
        cue=cue,
        stimulus=stimulus,
        gate=gate,
        trial=np.repeat(np.arange(n_trials), trial_bins),
        delay=delays,
        probabilities=probs,
        trial_bins=trial_bins,
        cue_bin=cue_bin,
    )

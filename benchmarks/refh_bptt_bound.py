"""How well can the rEFH's architecture filter the spring at all? A diagnostic for issue 4's
target (rEFH position MSE <= 1.3 x the Kalman filter's).

The rEFH's filter is one layer of sigmoid units fed its own previous means and the counts,
h_t = σ(h_{t-1} W_rec + r_t W_sen + b), read out linearly. This script trains that same
architecture with the answer in hand: by truncated backpropagation through time (Adam, cosine
decay, gradient clipping) to predict (cos, sin) of the true position, on the same training
stream as `tests/test_refh.py`'s experiment (10 x 1,000 steps of 40 trajectories, seed 1). It
then scores it exactly as that test scores the rEFH: frozen, a least-squares readout fitted on
the last 2,000 training steps, wrapped position MSE on 1,000 held-out steps of 40 new
trajectories (seed 2), against the Kalman filter with the true dynamics on the centre of mass.

A supervised network of the same size bounds what contrastive divergence, which never sees the
position, can be expected to reach. Not part of `python -m benchmarks` (about 3.5 minutes per
configuration on one core):

    python benchmarks/refh_bptt_bound.py [--hidden 240] [--lr 1e-2] [--epochs 100]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamlab.sim.spring import (
    HALF_RANGE,
    N_NEURONS,
    TRIAL,
    centre_of_mass,
    kalman_on_centre_of_mass,
    readout,
    simulate_spring,
    wrap,
)

BATCH = 40
TRAIN_TRIALS = 10


class SigmoidFilter(torch.nn.Module):
    """The rEFH's inference pass as a network: h_t = σ(h_{t-1} W_rec + scale r_t W_sen + b),
    with a linear head to (cos, sin) of position used only for training."""

    def __init__(self, hidden: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.W_rec = torch.nn.Parameter(torch.randn(hidden, hidden) / np.sqrt(hidden))
        self.W_sen = torch.nn.Parameter(torch.randn(N_NEURONS, hidden) * 0.1)
        self.b = torch.nn.Parameter(torch.zeros(hidden))
        self.W_out = torch.nn.Parameter(torch.randn(hidden, 2) * 0.01)
        self.b_out = torch.nn.Parameter(torch.zeros(2))

    def head(self, means: torch.Tensor) -> torch.Tensor:
        """The training head: (cos, sin) of position from the hidden means."""
        return means @ self.W_out + self.b_out

    def forward(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h @ self.W_rec + (self.scale * counts) @ self.W_sen + self.b)

    @torch.no_grad()
    def hidden_means(self, counts: np.ndarray) -> np.ndarray:
        """Hidden means (T, B, hidden) over `counts` (T, B, 15), restarting at each trial."""
        x = torch.from_numpy(counts)
        out = np.empty((*counts.shape[:2], self.b.numel()), dtype=np.float32)
        h = torch.zeros(counts.shape[1], self.b.numel())
        for t in range(len(x)):
            if t % TRIAL == 0:
                h = torch.zeros_like(h)
            h = self(h, x[t])
            out[t] = h.numpy()
        return out


def train(
    model: SigmoidFilter,
    counts: np.ndarray,
    states: np.ndarray,
    *,
    lr: float,
    epochs: int,
    chunk: int,
) -> float:
    """Truncated BPTT over `chunk`-step windows of every 1,000-step trajectory (the state is
    carried across windows, the gradient is not); returns the last epoch's mean loss."""
    trials = len(counts) // TRIAL

    def by_trajectory(a: np.ndarray) -> torch.Tensor:  # (T, B, d) -> (1000, trials x B, d)
        d = a.shape[-1]
        return (
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            .reshape(trials, TRIAL, a.shape[1], d)
            .permute(1, 0, 2, 3)
            .reshape(TRIAL, -1, d)
        )

    angle = states[..., 0] * np.pi / HALF_RANGE
    x = by_trajectory(counts)
    y = by_trajectory(np.stack([np.cos(angle), np.sin(angle)], axis=-1))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs * (TRIAL // chunk))
    loss_sum = 0.0
    for _ in range(epochs):
        h = torch.zeros(x.shape[1], model.b.numel())
        loss_sum = 0.0
        for start in range(0, TRIAL, chunk):
            h = h.detach()
            means = []
            for t in range(start, start + chunk):
                h = model(h, x[t])
                means.append(h)
            loss = ((model.head(torch.stack(means)) - y[start : start + chunk]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            loss_sum += float(loss.detach())
    return loss_sum / (TRIAL // chunk)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=240)
    parser.add_argument("--scale", type=float, default=0.1, help="input scaling of the counts")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's initial learning rate")
    parser.add_argument("--epochs", type=int, default=100, help="passes over the 10 trials")
    parser.add_argument("--chunk", type=int, default=50, help="BPTT window in steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    train_counts, train_states = simulate_spring(TRAIN_TRIALS, BATCH, seed=1)
    test_counts, test_states = simulate_spring(1, BATCH, seed=2)
    variance = float(np.var(wrap(centre_of_mass(train_counts) - train_states[..., 0])))
    truth = test_states[..., 0].ravel()

    def mse(position: np.ndarray) -> float:
        return float(np.mean(wrap(position.ravel() - truth) ** 2))

    kalman = mse(kalman_on_centre_of_mass(test_counts, variance))
    model = SigmoidFilter(args.hidden, args.scale)
    start = time.perf_counter()
    loss = train(
        model, train_counts, train_states, lr=args.lr, epochs=args.epochs, chunk=args.chunk
    )
    seconds = time.perf_counter() - start
    fit = slice(len(train_counts) - 2 * TRIAL, None)
    position, velocity = readout(
        model.hidden_means(train_counts[fit]), train_states[fit], model.hidden_means(test_counts)
    )
    speed = test_states[..., 1].ravel()
    result = {
        "hidden": args.hidden,
        "lr": args.lr,
        "epochs": args.epochs,
        "chunk": args.chunk,
        "train_s": round(seconds, 1),
        "final_loss": loss,
        "kalman_mse": kalman,
        "centre_of_mass_mse": mse(centre_of_mass(test_counts)),
        "bptt_mse": mse(position),
        "bptt_over_kalman": mse(position) / kalman,
        "velocity_r2": float(1 - np.mean((velocity - speed) ** 2) / np.var(speed)),
    }
    print(
        f"same architecture trained by BPTT ({args.hidden} units, {args.epochs} epochs, "
        f"{seconds:.0f} s): position MSE {result['bptt_mse']:.3g} = "
        f"x{result['bptt_over_kalman']:.2f} the Kalman filter's ({kalman:.3g}); velocity R^2 "
        f"{result['velocity_r2']:.3f}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's pieces: start the simulated rig as its own process, and report what the online
learner found against the references it approaches (batch PCA of the very same input, and the
simulator's true latents), as a text summary and a PNG."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamlab.learners.similarity import subspace_error
from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.store.run_store import RunStore


@dataclass(frozen=True)
class DemoRig:
    """The simulated population the demo streams (the report regenerates its latents)."""

    channels: int = 128
    rate: float = 250.0
    latents: int = 4
    firing_rate: float = 50.0
    seed: int = 7

    def population(self) -> LatentPoissonPopulation:
        return LatentPoissonPopulation(
            n_neurons=self.channels,
            n_latents=self.latents,
            rate=self.rate,
            seed=self.seed,
            firing_rate=self.firing_rate,
        )

    def start(self, endpoint: str, seconds: float) -> subprocess.Popen[bytes]:
        """`streamlab sim --publish endpoint ...` in a child process, as a real rig would run."""
        command = [
            sys.executable,
            "-m",
            "streamlab",
            "sim",
            "--publish",
            endpoint,
            "--channels",
            str(self.channels),
            "--rate",
            str(self.rate),
            "--latents",
            str(self.latents),
            "--firing-rate",
            str(self.firing_rate),
            "--seed",
            str(self.seed),
            "--seconds",
            str(seconds),
            "--startup-delay",
            "1.0",
        ]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def default_store_path() -> Path:
    return Path("streamlab-demo") / f"run-{dt.datetime.now():%Y%m%d-%H%M%S}.zarr"


def free_tcp_endpoint() -> str:
    """A loopback TCP endpoint on a port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def evaluate(store_path: str, rig: DemoRig, learner: str = "sm") -> dict[str, Any]:
    """Compare the learner with batch PCA of the recorded input and with the true latents."""
    store = RunStore.open(store_path)
    table = store.learner(learner)
    outputs = table.read("output").astype(np.float64)
    seq = table.read("seq").astype(np.int64)
    data = store.input().read("data").astype(np.float64)
    k = outputs.shape[1]
    if len(seq) < 4 * k:
        return {"samples": len(seq), "too_short": True}
    centred = data - data.mean(0)
    _, eigvecs = np.linalg.eigh(centred.T @ centred / len(centred))
    pca_basis = eigvecs[:, ::-1][:, :k]
    curve = []
    for ckpt_seq in store.checkpoint_seqs(learner):
        state = store.load_state(learner, ckpt_seq)
        filters = state["Minv"][0] @ state["W"][0]
        curve.append((ckpt_seq, subspace_error(filters, pca_basis)))
    population = rig.population()
    _, true_latents = population.sample(int(seq.max()) + 1)
    latents = true_latents[seq]
    pca_scores = centred @ pca_basis
    return {
        "samples": len(seq),
        "k": k,
        "curve": np.array(curve),
        "final_subspace_error": curve[-1][1] if curve else float("nan"),
        "r2_online": _held_out_r2(outputs, latents),
        "r2_batch_pca": _held_out_r2(pca_scores, latents),
        "latents": latents,
        "outputs": outputs,
        "seq": seq,
        "latency_us": table.read("latency_us"),
        "rate": rig.rate,
    }


def _held_out_r2(features: np.ndarray, targets: np.ndarray) -> float:
    """R^2 of a linear map features -> targets fitted on the first half, scored on the second."""
    half = len(features) // 2
    design = np.column_stack([features, np.ones(len(features))])
    coef, *_ = np.linalg.lstsq(design[:half], targets[:half], rcond=None)
    residual = targets[half:] - design[half:] @ coef
    total = targets[half:] - targets[half:].mean(0)
    return float(1.0 - (residual**2).sum() / (total**2).sum())


def summary_text(
    progress: dict[str, Any], result: dict[str, Any], store: str, png: str | None
) -> str:
    lines = [
        "streamlab demo",
        f"  streamed   {progress['samples']:,d} samples at {progress['samples_per_s']:,.0f}/s "
        f"(gaps {progress['gaps']}, {progress['missing']} lost; rejects {progress['rejects']})",
        f"  latency    p50 {progress['p50_us']:.0f} us, p99 {progress['p99_us']:.0f} us per sample "
        "(arrival -> learner output)",
    ]
    if result.get("too_short"):
        lines.append("  too few samples to evaluate the learner; run longer (--seconds)")
    else:
        lines += [
            f"  subspace   online SM vs batch PCA of the same input: error "
            f"{result['final_subspace_error']:.3f} (0 = same subspace, 2 = orthogonal)",
            f"  latents    held-out R^2 of the true latents: online SM {result['r2_online']:.2f}, "
            f"batch PCA {result['r2_batch_pca']:.2f}",
        ]
    lines.append(f"  store      {store}")
    if png:
        lines.append(f"  picture    {png}")
    return "\n".join(lines)


def plot(result: dict[str, Any], png: str) -> str:
    """Three panels: subspace convergence, latents recovered, latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    curve = result["curve"]
    ax = axes[0]
    if len(curve):
        ax.semilogy(curve[:, 0] / result["rate"], np.maximum(curve[:, 1], 1e-6), "o-", ms=3)
    ax.set(
        xlabel="time (s)",
        ylabel="subspace error vs batch PCA",
        title="Online similarity matching converges to PCA",
    )
    ax.grid(alpha=0.3)

    ax = axes[1]
    outputs, latents = result["outputs"], result["latents"]
    half = len(outputs) // 2
    design = np.column_stack([outputs, np.ones(len(outputs))])
    coef, *_ = np.linalg.lstsq(design[:half], latents[:half], rcond=None)
    window = slice(max(half, len(outputs) - int(4 * result["rate"])), len(outputs))
    t = result["seq"][window] / result["rate"]
    for i, colour in zip(range(min(2, latents.shape[1])), ("tab:blue", "tab:orange"), strict=False):
        ax.plot(t, latents[window, i], color=colour, lw=1.2, label=f"true latent {i + 1}")
        ax.plot(
            t,
            (design[window] @ coef)[:, i],
            color=colour,
            lw=0.8,
            ls="--",
            alpha=0.8,
            label=f"from SM outputs (R^2 {result['r2_online']:.2f} all)" if i == 0 else None,
        )
    ax.set(
        xlabel="time (s)", ylabel="latent", title="Latents read out from the SM outputs (held out)"
    )
    ax.legend(fontsize=8, loc="upper right")

    ax = axes[2]
    latency = result["latency_us"]
    bins = np.logspace(np.log10(max(latency.min(), 1.0)), np.log10(latency.max() + 1), 60)
    ax.hist(latency, bins=bins, color="tab:gray")
    for q, style in ((50, "-"), (99, "--")):
        value = np.percentile(latency, q)
        ax.axvline(value, color="k", ls=style, lw=1, label=f"p{q} {value:.0f} us")
    ax.set(
        xscale="log",
        xlabel="latency per sample (us)",
        ylabel="samples",
        title="Arrival -> output latency",
    )
    ax.legend(fontsize=8)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png

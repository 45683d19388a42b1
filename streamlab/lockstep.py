"""Many recorded sessions through one set of learners in lockstep: session b is stream b of
each learner's batch dimension, so one `step` call serves every session (on a GPU, the way to
replay a night's archive at once; on the CPU it amortises the per-step overhead).

Each session still gets its own store, as `streamlab replay` writes it: one row per sample with
the session's own seq and time, its gaps, and a final checkpoint holding that session's learner
state alone (so `attach --resume` or a later replay can go on from it). A session shorter than
the longest is fed zeros after its end; its state is taken at its own last sample, so the
padding never reaches its store. Learners whose state is shared across streams (e.g. the rEFH
with `share_weights=True`) cannot run sessions in lockstep and are refused.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamlab.errors import ConfigError
from streamlab.learners.base import Learner, resolve_device
from streamlab.learners.registry import (
    LearnerSpec,
    build_learners,
    learner_targets,
    name_specs,
    parse_spec,
)
from streamlab.metrics import Progress
from streamlab.pipeline import split_channels
from streamlab.sessions import Session
from streamlab.sinks import StreamInfo, _gap_columns, _jsonable, _to_host
from streamlab.store.run_store import Checkpoint, RunStore
from streamlab.stream.transport import Gap


@dataclass
class LockstepResult:
    """What one session of a lockstep replay wrote: its store and the run's metrics, as a
    replay of it alone reports them (latency: the batch step's time shared by its sessions)."""

    store: str
    progress: Progress


def stream_info(session: Session) -> StreamInfo:
    """The StreamInfo a replay of `session` announces (its hello)."""
    return StreamInfo(
        session.stream,
        int(session.data.shape[1]),
        session.data.dtype.str,
        session.kind,
        session.rate,
        session.meta,
    )


def _gaps(session: Session) -> list[Gap]:
    """The holes in a recorded session's seq, as the live receiver recorded them."""
    runs = session.runs()
    gaps = []
    for (_, end), (start, _) in itertools.pairwise(runs):
        last, first = session.seq_and_t(end - 1)[0], session.seq_and_t(start)[0]
        gaps.append(Gap(session.stream, last + 1, max(first - last - 1, 0), "seq", wall_time=0.0))
    return gaps


def _check_sessions(sessions: Sequence[Session], stores: Sequence[str | Path]) -> None:
    if not sessions:
        raise ConfigError("lockstep replay needs at least one session")
    if len(stores) != len(sessions):
        raise ConfigError(f"{len(sessions)} sessions but {len(stores)} store paths: give one each")
    shapes = {int(s.data.shape[1]) for s in sessions}
    if len(shapes) != 1:
        detail = ", ".join(f"{s.stream}: {s.data.shape[1]}" for s in sessions[:8]) + (
            "..." if len(sessions) > 8 else ""
        )
        raise ConfigError(
            f"sessions in lockstep must have the same channel count, got {sorted(shapes)} "
            f"({detail}); group them with `group_for_lockstep` and run each group"
        )
    for session in sessions:
        if session.n_samples == 0:
            raise ConfigError(f"session {session.stream!r} holds no samples; leave it out")


def lockstep_key(session: Session) -> tuple[int, float | None]:
    """What sessions must share to run in lockstep: channel count and rate."""
    return int(session.data.shape[1]), session.rate


def group_for_lockstep(keys: Sequence[tuple[int, float | None]]) -> list[list[int]]:
    """Indices of sessions grouped by their `lockstep_key`s: each group can run in lockstep."""
    groups: dict[tuple[int, float | None], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _initialise_as_alone(
    learners: dict[str, Learner],
    specs: dict[str, LearnerSpec],
    n_inputs: dict[str, int],
    batch: int,
    overrides: dict[str, Any],
) -> None:
    """Allocate each learner for `batch` streams with stream b's initial state equal to that of
    the same learner built alone (same seed): a session's outputs then do not depend on the
    company it replays in. Refuses learners whose state is shared across streams."""
    for name, learner in learners.items():
        alone = specs[name].build(**overrides)
        alone.initialize(n_inputs[name], 1)
        learner.initialize(n_inputs[name], batch)
        first = alone._state_tensors()
        for key, tensor in learner._state_tensors().items():
            if tensor.ndim == 0 or tensor.shape[0] != batch or first[key].shape[0] != 1:
                raise ConfigError(
                    f"learner {name!r} keeps state {key!r} shared across streams (shape "
                    f"{tuple(tensor.shape)}), so its sessions are not independent; replay "
                    "them one by one instead of in lockstep"
                )
            tensor.copy_(first[key].expand_as(tensor))


def session_state(learner: Learner, b: int) -> dict[str, Any]:
    """Learner state for session `b` alone, as a single-stream learner would save it."""
    state = learner.state_dict()
    batch = int(state["_batch"])
    for key, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and key != "_generator"
            and value.ndim
            and (value.shape[0] == batch)
        ):
            state[key] = value[b : b + 1].clone()
    state["_batch"] = 1
    return state


def replay_lockstep(
    sessions: Sequence[Session],
    learner_specs: Sequence[str],
    stores: Sequence[str | Path],
    *,
    device: str = "auto",
    seed: int | None = None,
    block_rows: int | None = None,
    overwrite: bool = False,
) -> list[LockstepResult]:
    """Replay `sessions` through the learners of `learner_specs` as one batch, writing session
    b's outputs to `stores[b]`; returns what each store got."""
    _check_sessions(sessions, stores)
    specs = [parse_spec(spec) for spec in learner_specs]
    overrides = {"device": device, "seed": seed}
    learners = build_learners(specs, **overrides)
    targets = learner_targets(specs)
    infos = [stream_info(s) for s in sessions]
    splits = {name: split_channels(infos[0], channels, name) for name, channels in targets.items()}
    n_inputs = {
        name: len(splits[name][0]) if name in splits else infos[0].n_channels for name in learners
    }
    _initialise_as_alone(learners, name_specs(specs), n_inputs, len(sessions), overrides)
    config = {
        "learners": [str(s) for s in specs],
        "pattern": "lockstep",
        "lockstep_sessions": len(sessions),
        "device": device,
        "seed": seed,
        "record_input": False,
    }
    runs = [
        RunStore.create(
            path,
            config=config,
            source={"session": s.stream, "lockstep": True},
            overwrite=overwrite,
        )
        for path, s in zip(stores, sessions, strict=True)
    ]
    gaps = [_gaps(s) for s in sessions]
    for run, info, session_gaps in zip(runs, infos, gaps, strict=True):
        run.set_stream(info.to_dict())
        if session_gaps:
            run.append_events("gaps", _gap_columns(session_gaps))
    start = time.perf_counter()
    try:
        rows = block_rows or _block_rows(len(sessions), sessions[0].data.shape[1])
        final_states, latency_us = _run_blocks(
            sessions, learners, splits, runs, rows, resolve_device(device)
        )
    except BaseException as exc:
        for run in runs:
            run.set_status("failed", f"{type(exc).__name__}: {exc}")
        raise
    seconds = time.perf_counter() - start
    results = []
    for b, (run, session) in enumerate(zip(runs, sessions, strict=True)):
        last = session.n_samples - 1
        seq_last, t_last = session.seq_and_t(last)
        checkpoint = Checkpoint(
            seq=seq_last,
            t=t_last,
            stream=session.stream,
            rows=dict.fromkeys(learners, session.n_samples),
            input_rows=0,
            gap_rows=len(gaps[b]),
            stream_state=infos[b].to_dict(),
        )
        host = {name: _to_host(state) for name, state in final_states[b].items()}
        run.write_checkpoint(checkpoint, host)
        run.set_status("complete")
        run.consolidate()
        n = session.n_samples
        p50, p99, peak = np.percentile(latency_us[:n], [50, 99, 100])
        progress = Progress(
            samples=n,
            frames=n,
            elapsed_s=seconds,
            samples_per_s=n / max(seconds, 1e-9),
            p50_us=float(p50),
            p99_us=float(p99),
            max_us=float(peak),
            gaps=len(gaps[b]),
            missing=sum(g.n_missing for g in gaps[b]),
            checkpoints=1,
        )
        results.append(LockstepResult(run.path, progress))
    return results


BLOCK_BYTES = 64 << 20  # input held per block; each block is one append per store and column


def _block_rows(batch: int, channels: int) -> int:
    """Rows per block: as many as fit `BLOCK_BYTES` of float32 input, between 256 and 8,192
    (every block costs each store a few Zarr writes, so fewer, longer blocks are cheaper)."""
    return int(min(8192, max(256, BLOCK_BYTES // (4 * batch * max(channels, 1)))))


def _run_blocks(
    sessions: Sequence[Session],
    learners: dict[str, Learner],
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    runs: list[RunStore],
    block_rows: int,
    device: torch.device,
) -> tuple[list[dict[str, dict[str, Any]]], np.ndarray]:
    """Step every sample of every session, block by block, appending each block's rows to
    each session's store; returns each session's learner states at its last sample and the
    per-session latency (µs) of every step."""
    B, n = len(sessions), int(sessions[0].data.shape[1])
    lengths = np.array([s.n_samples for s in sessions])
    final_states: list[dict[str, dict[str, Any]]] = [{} for _ in range(B)]
    all_latency = np.zeros(int(lengths.max()), dtype=np.float32)
    tables_ready = False
    for lo in range(0, int(lengths.max()), block_rows):
        hi = min(lo + block_rows, int(lengths.max()))
        block = np.zeros((hi - lo, B, n), dtype=np.float32)
        for b, session in enumerate(sessions):
            take = max(0, min(hi, session.n_samples) - lo)
            block[:take, b] = session.data[lo : lo + take]
        x_block = torch.from_numpy(block).to(device)  # one copy per block, not per step
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in learners}
        extras: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in learners}
        latency = all_latency[lo:hi]
        for i in range(hi - lo):
            begin = time.perf_counter_ns()
            x = x_block[i]
            for name, learner in learners.items():
                if name in splits:
                    xs, ys = splits[name]
                    out = learner.step(x[:, xs], x[:, ys])
                else:
                    out = learner.step(x)
                outputs[name].append(out)
                for key, value in learner.extra_outputs().items():
                    extras[name].setdefault(key, []).append(value.clone())
            latency[i] = (time.perf_counter_ns() - begin) / 1e3 / B
            for b in np.flatnonzero(lengths == lo + i + 1):  # session b's last sample
                final_states[b] = {name: session_state(lr, int(b)) for name, lr in learners.items()}
        if not tables_ready:
            for run in runs:
                for name, learner in learners.items():
                    dtype = "f4" if learner.dtype == "float32" else "f8"
                    info = {
                        "class": type(learner).__name__,
                        "params": _jsonable(learner._get_params()),
                    }
                    widths = {k: int(v.shape[1]) for k, v in learner.extra_outputs().items()}
                    run.learner(name, learner.n_components, dtype, info, widths)
            tables_ready = True
        stacked = {name: torch.stack(outs, dim=1).cpu().numpy() for name, outs in outputs.items()}
        stacked_extras = {
            name: {key: torch.stack(v, dim=1).cpu().numpy() for key, v in by_key.items()}
            for name, by_key in extras.items()
        }
        for b, (run, session) in enumerate(zip(runs, sessions, strict=True)):
            m = max(0, min(hi, session.n_samples) - lo)
            if m == 0:
                continue
            rows = np.arange(lo, lo + m)
            seq, t = _seq_t(session, rows)
            for name in learners:
                run.append_learner(
                    name,
                    stacked[name][b, :m],
                    seq,
                    t,
                    latency[:m],
                    {key: v[b, :m] for key, v in stacked_extras[name].items()},
                )
    return final_states, all_latency


def _seq_t(session: Session, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """seq (uint64) and t (float64) of `rows` of `session`."""
    if session.seq is not None and session.t is not None:
        return session.seq[rows].astype(np.uint64), session.t[rows].astype(np.float64)
    seq = (session.first_seq + rows).astype(np.uint64)
    return seq, session.t0 + rows / session.rate

"""The hot loop: Source -> Frame -> learners -> sinks, in plain Python and PyTorch.

Per frame: the payload becomes one tensor, every learner steps once per sample, outputs go to
the sinks (which buffer), and latency is measured from the frame's arrival to each learner's
output. Gaps and rejections found by the source go to the sinks as events. Every
`checkpoint_every` samples the learners' states are handed to the sinks, consistent with the
rows written so far, so a killed run resumes from there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from streamlab.errors import ConfigError
from streamlab.learners.base import Learner
from streamlab.metrics import LagMeter, LatencyStats, Progress, RateMeter
from streamlab.sinks import Sink, StreamInfo
from streamlab.store.run_store import Checkpoint
from streamlab.stream.protocol import Control, Frame, Message
from streamlab.stream.transport import Event, Gap

_SHUTDOWN = threading.Event()  # set by `stop_all`: every pipeline of this process stops
_running = [0]  # pipelines inside `run` now, in any thread


def stop_all() -> bool:
    """Stop every pipeline running in this process after its current frame, each closing its
    sinks with status `stopped` (a command's Ctrl-C or SIGTERM: the nightly flow runs several,
    in threads), for the rest of the process's life. Returns whether any was running.
    Signal-safe: it sets a flag, where an exception raised inside a ZeroMQ call can abort the
    process."""
    _SHUTDOWN.set()
    return _running[0] > 0


def stopped_by_signal() -> bool:
    """Whether `stop_all` was called in this process."""
    return _SHUTDOWN.is_set()


class Source(Protocol):
    """What a pipeline reads from: `ZmqSource` and anything shaped like it."""

    events: list[Event]

    def receive(self, timeout: float = 0.1) -> Message | None: ...

    def drain_events(self) -> list[Event]: ...

    def expect(
        self, stream: str, seq: int, n_channels: int | None, reason: str = "interrupted"
    ) -> None: ...


@dataclass
class ResumePoint:
    """Where a resumed run continues: the data stream it follows and the next `seq` expected."""

    stream: StreamInfo
    next_seq: int


class Pipeline:
    """Run `learners` on the frames of `source`, sending results to `sinks`.

    The pipeline follows one data stream: the first whose frames arrive (or `stream` if given,
    or the resumed one); frames of other streams are counted as ignored. `targets` maps a
    learner's name to the channels (hello names, or indices) it gets as y in `step(x, y)`; its
    x is then the other channels.

    With `calibrate` (seconds of stream time), the learners taking y get it only for samples
    whose time is before the stream's first sample time plus `calibrate`; after that they get
    no y (predict only), whatever the stream's y channels hold (those are still stored as the
    truth). Sinks hear of the boundary through `on_calibration`. A resumed run passes the
    stored boundary as `calibration_end_t`."""

    def __init__(
        self,
        source: Source,
        learners: Mapping[str, Learner],
        sinks: Sequence[Sink] = (),
        *,
        stream: str | None = None,
        checkpoint_every: int = 5000,
        report_every: float = 1.0,
        on_progress: Callable[[Progress], None] | None = None,
        resume: ResumePoint | None = None,
        targets: Mapping[str, Sequence[str | int]] | None = None,
        calibrate: float | None = None,
        calibration_end_t: float | None = None,
    ) -> None:
        if not learners:
            raise ValueError("a pipeline needs at least one learner")
        self.targets = {name: list(channels) for name, channels in (targets or {}).items()}
        unknown = set(self.targets) - set(learners)
        if unknown:
            raise ConfigError(f"targets name learners {sorted(unknown)} that are not running")
        check_calibrate(calibrate, self.targets)
        self.calibrate = calibrate
        self.calibration_end_t = calibration_end_t
        self._labelled = True  # whether samples still carry y (False once calibration ended)
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._sinks_open = False
        # each learner's state at the last checkpoint, to roll back to if it diverges
        self._rollback: dict[str, tuple[int, dict[str, Any]]] = {}
        self.source = source
        self.learners = dict(learners)
        self.sinks = list(sinks)
        self.checkpoint_every = checkpoint_every
        self.report_every = report_every
        self.on_progress = on_progress
        self._stream_name = stream
        self._stream: StreamInfo | None = None
        self._hello: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self.latency = LatencyStats()
        self.lag = LagMeter()
        self.progress = Progress()
        self._since_checkpoint = 0
        self._last_frame: Frame | None = None
        if resume is not None:
            self._rollback = {
                name: (resume.next_seq - 1, learner.state_dict())
                for name, learner in self.learners.items()
                if learner.is_initialized
            }
            self._start_stream(resume.stream)
            self._open_sinks()  # the learners hold their resumed state: sizes are known
            source.expect(
                resume.stream.name, resume.next_seq, resume.stream.n_channels, "interrupted"
            )

    def stop(self) -> None:
        """Ask the loop to end after the current frame (thread- and signal-safe)."""
        self._stop.set()

    def run(
        self,
        *,
        seconds: float | None = None,
        until_eos: bool = True,
        max_samples: int | None = None,
    ) -> Progress:
        """Run until the stream's eos (if `until_eos`), `seconds` elapse, `max_samples` samples
        are processed, or `stop()`; returns the final metrics. Sinks are closed with status
        `complete`, `stopped` (KeyboardInterrupt) or `failed` (and the error is re-raised)."""
        start = time.perf_counter()
        deadline = start + seconds if seconds is not None else float("inf")
        next_report = start + self.report_every
        rate = RateMeter()
        status, error = "complete", None
        _running[0] += 1
        try:
            while not self._stop.is_set():
                if _SHUTDOWN.is_set():
                    status = "stopped"
                    break
                message = self.source.receive(timeout=0.05)
                if self.source.events:
                    self._dispatch(self.source.drain_events())
                if isinstance(message, Frame) and self._accept(message):
                    self._process(message)
                elif isinstance(message, Control) and self._on_control(message) and until_eos:
                    break
                now = time.perf_counter()
                if now >= next_report:
                    next_report = now + self.report_every
                    for sink in self.sinks:
                        sink.tick()
                    self._report(start, rate.rate(self.progress.samples))
                if now >= deadline or (
                    max_samples is not None and self.progress.samples >= max_samples
                ):
                    break
        except KeyboardInterrupt:
            status = "stopped"
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            self._close(status, error, suppress=True)
            raise
        finally:
            _running[0] -= 1
        if self.source.events:
            self._dispatch(self.source.drain_events())
        if self._last_frame is not None and self._since_checkpoint:
            self._checkpoint(self._last_frame)
        self._close(status, error)
        self._report(
            start, self.progress.samples / max(time.perf_counter() - start, 1e-9), final=True
        )
        return self.progress

    # -- per message ------------------------------------------------------------------
    def _accept(self, frame: Frame) -> bool:
        if self._stream is None:
            if self._stream_name is not None and frame.stream != self._stream_name:
                self.progress.ignored += 1
                return False
            meta = self._hello.get(frame.stream, {})
            self._start_stream(
                StreamInfo(
                    frame.stream,
                    frame.n_channels,
                    frame.data.dtype.str,
                    frame.kind,
                    frame.rate or meta.get("rate"),
                    meta,
                ),
                first_t=frame.t,
            )
        elif frame.stream != self._stream.name:
            self.progress.ignored += 1
            return False
        if self.progress.first_seq is None:
            self.progress.first_seq = frame.seq
        self.progress.stream_ended = False
        return True

    def _start_stream(self, stream: StreamInfo, first_t: float | None = None) -> None:
        if self.calibrate is not None and self.calibration_end_t is None and first_t is not None:
            self.calibration_end_t = first_t + self.calibrate
        self._splits = {
            name: split_channels(stream, channels, name) for name, channels in self.targets.items()
        }
        self._stream = stream

    def _open_sinks(self) -> None:
        """Open the sinks once the learners know their sizes (after the first step, or on
        resume), so the store can size every output column."""
        assert self._stream is not None
        for sink in self.sinks:
            sink.open(self.learners, self._stream)
        self._sinks_open = True

    def _on_control(self, message: Control) -> bool:
        """Record a hello; True if `message` ends the followed stream."""
        if message.kind == "hello":
            self._hello[message.stream] = message.meta
            return False
        ends = self._stream is not None and message.stream == self._stream.name
        self.progress.stream_ended |= ends
        return ends

    def _process(self, frame: Frame) -> None:
        self.progress.behind_s = self.lag.update(frame.received_ns, frame.t)
        self.progress.max_behind_s = self.lag.max_behind_s
        data = frame.data
        x = torch.from_numpy(data.astype(np.float32) if data.dtype != np.float32 else data.copy())
        m = frame.n_samples
        latency = np.empty((len(self.learners), m), dtype=np.int64)
        labelled = self._labelled_samples(frame)
        if m == 1:  # the live closed loop's case: no per-frame lists and stacks
            outs, extra = self._step_sample(x[0], frame.received_ns, latency, 0, labelled > 0)
            outputs = {name: out.unsqueeze(0) for name, out in outs.items()}
            extras = {
                name: {key: value.unsqueeze(0) for key, value in by_key.items()}
                for name, by_key in extra.items()
            }
        else:
            steps = [
                self._step_sample(x[i], frame.received_ns, latency, i, i < labelled)
                for i in range(m)
            ]
            outputs = {name: torch.stack([outs[name] for outs, _ in steps]) for name in steps[0][0]}
            extras = {
                name: {key: torch.stack([extra[name][key] for _, extra in steps]) for key in keys}
                for name, keys in steps[0][1].items()
            }
        if not self._sinks_open:
            self._open_sinks()
        for sink in self.sinks:
            sink.on_frame(frame, outputs, latency, extras)
        if labelled < m and self._labelled:
            self._end_calibration(frame, labelled)
        for name, output in outputs.items():
            if not _all_finite(output):  # one check per frame, not per sample
                first_bad = int((~torch.isfinite(output).all(dim=1)).nonzero()[0, 0])
                self._roll_back(name, frame.seq + first_bad)
        self.progress.samples += m
        self.progress.frames += 1
        self._last_frame = frame
        self._since_checkpoint += m
        if self._since_checkpoint >= self.checkpoint_every:
            self._checkpoint(frame)

    def _labelled_samples(self, frame: Frame) -> int:
        """How many of `frame`'s samples, from its first, still carry y (all of them unless
        calibration ends inside or before this frame)."""
        if not self._labelled:
            return 0
        end = self.calibration_end_t
        if end is None:
            return frame.n_samples
        rate = self._rate(frame)
        if frame.n_samples == 1 or not rate:
            return frame.n_samples if frame.t < end else 0
        times = frame.t + np.arange(frame.n_samples) / rate
        return int(np.searchsorted(times, end, side="left"))

    def _end_calibration(self, frame: Frame, labelled: int) -> None:
        """Calibration ended at sample `labelled` of `frame`: no y from here on; tell the sinks
        where."""
        self._labelled = False
        rate = self._rate(frame)
        t = frame.t + labelled / rate if rate else frame.t
        assert self.calibrate is not None and self.calibration_end_t is not None
        for sink in self.sinks:
            sink.on_calibration(self.calibrate, self.calibration_end_t, frame.seq + labelled, t)

    def _rate(self, frame: Frame) -> float | None:
        """Samples per second of `frame`: its own, else the stream's."""
        return frame.rate or (self._stream.rate if self._stream is not None else None)

    def _step_sample(
        self,
        sample: torch.Tensor,
        received_ns: int,
        latency: np.ndarray,
        i: int,
        labelled: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
        """Every learner's step on one sample, in order, recording in `latency[j, i]` the time
        from the frame's arrival to learner j's output; learners taking y get it only when
        `labelled`. Returns the outputs (k,) and the extra outputs (d,) by learner."""
        outputs: dict[str, torch.Tensor] = {}
        extras: dict[str, dict[str, torch.Tensor]] = {}
        splits = self._splits
        for j, (name, learner) in enumerate(self.learners.items()):
            if name in splits:
                xs, ys = splits[name]
                outputs[name] = learner.step(sample[xs], sample[ys] if labelled else None)
            else:
                outputs[name] = learner.step(sample)
            latency[j, i] = time.perf_counter_ns() - received_ns
            extra = learner.extra_outputs()
            if extra:
                extras[name] = {key: value[0].clone() for key, value in extra.items()}
        self.latency.add(int(latency[-1, i]))
        return outputs, extras

    def _roll_back(self, name: str, seq: int) -> None:
        """Learner `name` gave a non-finite output at sample `seq`: restore its state at the last
        checkpoint (a fresh learner if there was none), flag it, and carry on; the other
        learners are untouched."""
        learner = self.learners[name]
        restored = self._rollback.get(name)
        if restored is None:
            self.learners[name] = learner.clone()
            restored_seq = None
        else:
            restored_seq, state = restored
            learner.load_state_dict(
                {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
            )
        self.progress.divergences += 1
        for sink in self.sinks:
            sink.on_divergence(name, seq, restored_seq)

    def _checkpoint(self, frame: Frame) -> None:
        last_seq = frame.seq + frame.n_samples - 1
        last_t = frame.t + (frame.n_samples - 1) / frame.rate if frame.rate else frame.t
        assert self._stream is not None
        checkpoint = Checkpoint(
            seq=int(last_seq),
            t=float(last_t),
            stream=self._stream.name,
            rows={},
            input_rows=0,
            gap_rows=0,
            stream_state=self._stream.to_dict(),
        )
        states = {name: learner.state_dict() for name, learner in self.learners.items()}
        self._rollback = {name: (int(last_seq), state) for name, state in states.items() if state}
        for sink in self.sinks:
            sink.on_checkpoint(checkpoint, states)
        self._since_checkpoint = 0
        self.progress.checkpoints += 1

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Gap):
                self.progress.gaps += 1
                self.progress.missing += event.n_missing
            else:
                self.progress.rejects += 1
                code = str(event.code)
                self.progress.rejects_by_code[code] = self.progress.rejects_by_code.get(code, 0) + 1
        for sink in self.sinks:
            sink.on_events(events)

    def _close(self, status: str, error: str | None, suppress: bool = False) -> None:
        for sink in self.sinks:
            try:
                sink.close(status, error)
            except Exception:
                if not suppress:
                    raise

    def _report(self, start: float, rate: float, final: bool = False) -> None:
        p = self.progress
        p.elapsed_s = time.perf_counter() - start
        p.samples_per_s = rate
        if final:
            p.p50_us, p.p99_us = self.latency.quantiles_us()
            p.max_us = self.latency.max_ns / 1e3 if self.latency.count else float("nan")
        else:
            p.p50_us, p.p99_us = self.latency.recent_quantiles_us()
        if self.on_progress is not None:
            self.on_progress(p)


def check_calibrate(calibrate: float | None, targets: Mapping[str, Sequence[Any]]) -> None:
    """`calibrate` is None, or a positive number of seconds for a run where some learner takes
    y (otherwise there is nothing to withhold)."""
    if calibrate is None:
        return
    if not (isinstance(calibrate, int | float) and calibrate > 0 and np.isfinite(calibrate)):
        raise ConfigError(f"calibrate must be a positive number of seconds, got {calibrate!r}")
    if not targets:
        raise ConfigError(
            "calibrate withholds y after calibration, but no learner takes y: give one a target, "
            "e.g. --learner akd:y=x+y"
        )


def _all_finite(output: torch.Tensor) -> bool:
    """Whether every value is finite: NumPy on the CPU (one call instead of torch's three),
    one reduction and one host sync on a GPU."""
    if output.device.type == "cpu":
        return bool(np.isfinite(output.numpy()).all())
    return bool(torch.isfinite(output).all())


def split_channels(
    stream: StreamInfo, channels: Sequence[str | int], learner: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x columns, y columns) of `stream` for a learner taking `channels` as y: each channel is
    a name from the stream's hello (`channels` list) or an index."""
    names = stream.meta.get("channels")
    names = [str(c) for c in names] if isinstance(names, list) else []
    y: list[int] = []
    for channel in channels:
        text = str(channel)
        if text in names:
            y.append(names.index(text))
        elif text.isdigit() and int(text) < stream.n_channels:
            y.append(int(text))
        else:
            known = f"its channels are named {names}" if names else "its hello names no channels"
            raise ConfigError(
                f"learner {learner!r} takes y from channel {text!r}, which stream "
                f"{stream.name!r} does not have ({stream.n_channels} channels; {known}); give "
                f"names from the hello or indices 0..{stream.n_channels - 1}"
            )
    if len(set(y)) != len(y) or len(y) >= stream.n_channels:
        raise ConfigError(
            f"learner {learner!r}: y channels {list(channels)} must be distinct and leave at "
            f"least one of the {stream.n_channels} channels for x"
        )
    x = [c for c in range(stream.n_channels) if c not in y]
    return torch.tensor(x), torch.tensor(y)

"""Paced playback: send blocks of samples as frames of one stream, in real time or as fast as the
receiver takes them. The simulated rig and session replay both go through `play`, so a replay
takes the very path a live rig does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from streamlab.stream.protocol import Frame
from streamlab.stream.transport import Publisher


def play(
    publisher: Publisher,
    stream: str,
    blocks: Iterable[np.ndarray],
    *,
    rate: float,
    kind: str = "spikes",
    realtime: bool = True,
    frame_samples: int = 1,
    first_seq: int = 0,
    t0: float = 0.0,
    meta: dict[str, Any] | None = None,
    hello_every: float | None = 1.0,
    stop: threading.Event | None = None,
    send_eos: bool = True,
    times: np.ndarray | None = None,
) -> int:
    """Send `blocks` (each (m, n)) as frames of `frame_samples` samples; returns samples sent.

    Sample k gets `seq = first_seq + k` and `t = t0 + k / rate`. A hello opens the stream and is
    repeated every `hello_every` seconds so that late subscribers learn the metadata; an eos
    closes it unless `stop` was set or `send_eos` is False. `times`, when given, are the
    samples' own times instead (a recorded run's, so that its replay stamps every frame as the
    live run did)."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    hello_meta = dict(meta or {})
    hello_meta.setdefault("rate", rate)
    hello_meta.setdefault("kind", kind)
    sent = 0
    start = time.perf_counter()
    last_hello = -float("inf")
    for block in blocks:
        block = np.asarray(block)
        for lo in range(0, block.shape[0], frame_samples):
            if stop is not None and stop.is_set():
                return sent
            chunk = block[lo : lo + frame_samples]
            now = time.perf_counter()
            if hello_every is not None and now - last_hello >= hello_every:
                hello_meta["n_channels"] = int(block.shape[1])
                publisher.hello(stream, first_seq + sent, t0 + sent / rate, hello_meta)
                last_hello = now
            if realtime:
                _wait_until(start + (sent + chunk.shape[0] - 1) / rate)
            t = t0 + sent / rate if times is None else float(times[sent])
            publisher.send(Frame(stream, chunk, first_seq + sent, t, kind, rate))
            sent += chunk.shape[0]
    if send_eos and not (stop is not None and stop.is_set()):
        publisher.eos(stream, first_seq + sent, t0 + sent / rate)
    return sent


def _wait_until(deadline: float) -> None:
    """Sleep until `deadline` (perf_counter seconds), spinning the last 0.2 ms for precision."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > 0.0003:
            time.sleep(remaining - 0.0002)

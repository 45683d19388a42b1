"""Paced playback: send blocks of samples as frames of one stream, in real time or as fast as the
receiver takes them. The simulated rig and session replay both go through `play`, so a replay
takes the very path a live rig does."""

from __future__ import annotations

import math
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
    speed: float = 1.0,
) -> int:
    """Send `blocks` (each (m, n)) as frames of `frame_samples` samples; returns samples sent.

    Sample k gets `seq = first_seq + k` and `t = t0 + k / rate`. A hello opens the stream and is
    repeated every `hello_every` seconds so that late subscribers learn the metadata; an eos
    closes it unless `stop` was set or `send_eos` is False. `times`, when given, are the
    samples' own times instead (a recorded run's, so that its replay stamps every frame as the
    live run did). In real time, `speed` scales the pace (2.0: twice as fast)."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
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
                wait_until(start + (sent + chunk.shape[0] - 1) / (rate * speed))
            t = t0 + sent / rate if times is None else float(times[sent])
            publisher.send(Frame(stream, chunk, first_seq + sent, t, kind, rate))
            sent += chunk.shape[0]
    if send_eos and not (stop is not None and stop.is_set()):
        publisher.eos(stream, first_seq + sent, t0 + sent / rate)
    return sent


def wait_until(deadline: float) -> None:
    """Sleep until `deadline` (perf_counter seconds), spinning the last 0.2 ms for precision."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > 0.0003:
            time.sleep(remaining - 0.0002)


def play_session(
    publisher: Publisher,
    session: Any,
    *,
    realtime: bool = False,
    speed: float = 1.0,
    frame_samples: int = 1,
    hello_every: float | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Send a recorded `streamlab.sessions.Session` as its stream: one hello with its metadata
    (then every `hello_every` seconds, for late subscribers), its rows with their own seq and
    times, so a recorded gap stays a gap, and an eos. Returns samples sent."""
    runs = session.runs()
    sent = 0
    for index, (lo, hi) in enumerate(runs):
        first_seq, t0 = session.seq_and_t(lo)
        sent += play(
            publisher,
            session.stream,
            session.blocks(lo=lo, hi=hi),
            rate=session.rate,
            kind=session.kind,
            realtime=realtime,
            speed=speed,
            frame_samples=frame_samples,
            first_seq=first_seq,
            t0=t0,
            meta=session.meta,
            hello_every=(hello_every or math.inf) if index == 0 else hello_every,
            stop=stop,
            send_eos=index == len(runs) - 1,
            times=None if session.t is None else session.t[lo:hi],
        )
        if stop is not None and stop.is_set():
            break
    return sent

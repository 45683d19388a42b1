"""Real pyzmq sockets for the wire protocol: a `Publisher` that binds (PUB for live streams,
PUSH for replays that must lose nothing) and a `ZmqSource` that connects (SUB or PULL), checks
every message, tracks each stream's `seq` to find gaps, and records what it rejected and why."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zmq

from streamlab.errors import ConfigError, ProtocolError
from streamlab.stream.protocol import Control, Message, Reject, decode, encode
from streamlab.stream.security import CurveClient, CurveServer, secure_client, secure_server

Pattern = Literal["pub", "push", "sub", "pull"]
ZERO_COPY_MIN_BYTES = 65536  # pyzmq copies smaller frames anyway
_SNDMORE = int(zmq.SNDMORE)


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples that never arrived: `n_missing` samples from `first_seq` on (`n_missing` is 0 for
    a stream that restarted its numbering). `reason` is `seq` (a jump in the numbering),
    `restart` (a new hello moved `seq`) or `interrupted` (streamlab itself was down)."""

    stream: str
    first_seq: int
    n_missing: int
    reason: str = "seq"
    wall_time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message the receiver refused: `code` is a `Reject` value, `detail` says what was wrong."""

    stream: str
    code: str
    detail: str
    seq: int = -1
    wall_time: float = field(default_factory=time.time)


Event = Gap | Rejection


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"cannot bind {endpoint}: {exc.strerror}; is another rig or run using it? "
            "Pick a free port, e.g. tcp://127.0.0.1:0"
        ) from exc
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _connect(sock: zmq.Socket, endpoint: str) -> None:
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"cannot connect to {endpoint}: {exc.strerror}; endpoints look like "
            "tcp://127.0.0.1:5555 or ipc:///tmp/rig.sock"
        ) from exc


class Publisher:
    """Binds a PUB (live: never blocks, drops at the high-water mark) or PUSH (replay: blocks at
    the high-water mark, loses nothing) socket and sends frames in the wire format.

    `endpoint` may end in port 0; `self.endpoint` is then the address actually bound."""

    def __init__(
        self,
        endpoint: str,
        *,
        pattern: Literal["pub", "push"] = "pub",
        hwm: int = 10_000,
        send_timeout: float | None = None,
        context: zmq.Context | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        if pattern not in ("pub", "push"):
            raise ConfigError(f"publisher pattern must be 'pub' or 'push', not {pattern!r}")
        self.pattern = pattern
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB if pattern == "pub" else zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 1000)
        if send_timeout is not None:
            self._sock.setsockopt(zmq.SNDTIMEO, int(send_timeout * 1000))
        self.allow = None if curve is None else secure_server(self._sock, curve, endpoint)
        self.endpoint = _bind(self._sock, endpoint)
        self.sent = 0

    def send(self, message: Message) -> None:
        """Send one message; raises `TimeoutError` if a PUSH peer does not take it in time."""
        topic, header, payload = encode(message)
        copy = len(payload) < ZERO_COPY_MIN_BYTES
        sock = self._sock
        try:  # three sends with int flags: send_multipart's per-part checks and flag enums
            sock.send(topic, _SNDMORE)  # cost microseconds on the closed loop's path
            sock.send(header, _SNDMORE)
            sock.send(payload, 0, copy=copy)
        except zmq.Again:
            raise TimeoutError(
                f"no receiver took a message on {self.endpoint} in time; is the pipeline attached?"
            ) from None
        self.sent += 1

    def hello(self, stream: str, seq: int, t: float, meta: dict[str, Any]) -> None:
        self.send(Control(stream, "hello", seq, t, meta))

    def eos(self, stream: str, seq: int, t: float) -> None:
        self.send(Control(stream, "eos", seq, t))

    def send_raw(self, parts: list[bytes]) -> None:
        """Send parts as they are, unchecked: for tests and tools that speak to odd receivers."""
        self._sock.send_multipart(parts)

    def close(self, linger: float | None = None) -> None:
        if linger is not None:
            self._sock.setsockopt(zmq.LINGER, int(linger * 1000))
        self._sock.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StreamState:
    """What the receiver knows of one stream: its hello, channel count and next `seq`."""

    n_channels: int | None = None
    expected_seq: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    allow_nonfinite: bool = False
    next_gap_reason: str = "seq"


class EventLog:
    """What every source keeps for the pipeline: gaps and rejections since the last drain."""

    events: list[Event]

    def drain_events(self) -> list[Event]:
        """The events recorded since the last call, oldest first."""
        events, self.events = self.events, []
        return events


class ZmqSource(EventLog):
    """Connects a SUB (with topic prefix `topic`) or PULL socket and yields checked messages.

    `receive()` returns the next accepted `Frame` or `Control`, or None on timeout. Rejected
    messages and detected gaps are appended to `events` (drain it with `drain_events()`) and
    counted; the stream goes on. A stream's float data must be finite unless its hello says
    `"allow_nonfinite": true`.

    `spin` > 0 busy-waits up to that many seconds for each message before sleeping in a
    blocking poll: a thread woken from sleep takes tens of microseconds to run again (more on
    a virtual machine), which a closed loop pays on every sample; spinning trades one CPU core
    for it."""

    def __init__(
        self,
        endpoint: str,
        *,
        pattern: Literal["sub", "pull"] = "sub",
        topic: str = "",
        hwm: int = 10_000,
        context: zmq.Context | None = None,
        watch_connection: bool = False,
        curve: CurveClient | None = None,
        spin: float = 0.0,
    ) -> None:
        if pattern not in ("sub", "pull"):
            raise ConfigError(f"source pattern must be 'sub' or 'pull', not {pattern!r}")
        if not 0 <= spin < math.inf:
            raise ConfigError(f"spin must be a finite number of seconds >= 0, got {spin!r}")
        self.spin = spin
        self.endpoint = endpoint
        self.pattern = pattern
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB if pattern == "sub" else zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        if pattern == "sub":
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        # watched from before the connect, so the handshake cannot be missed
        self._monitor = (
            self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            if watch_connection
            else None
        )
        if curve is not None:
            secure_client(self._sock, curve)
        _connect(self._sock, endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self.streams: dict[str, StreamState] = {}
        self.events: list[Event] = []
        self.n_messages = 0
        self.n_rejected = 0
        self.n_gaps = 0
        self.n_missing = 0

    def receive(self, timeout: float = 0.1) -> Message | None:
        """The next accepted message, or None if nothing acceptable arrived within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._wait(deadline):
                return None
            parts = self._sock.recv_multipart(copy=False)
            received_ns = time.perf_counter_ns()
            self.n_messages += 1
            message: Message | None = None
            try:
                message = decode(parts, received_ns)
                self._admit(message)
            except ProtocolError as exc:
                self._reject(parts, exc, message.seq if message is not None else -1)
                continue
            return message

    def _wait(self, deadline: float) -> bool:
        """Whether a message is ready before `deadline` (monotonic seconds): spin first (with
        `spin`), then sleep in poll."""
        sock = self._sock
        if self.spin:
            spin_end = min(time.monotonic() + self.spin, deadline)
            while True:
                if sock.poll(0):
                    return True
                if time.monotonic() >= spin_end:
                    break
        remaining = max(0.0, deadline - time.monotonic())
        return bool(sock.poll(math.ceil(remaining * 1000)))

    def expect(
        self, stream: str, seq: int, n_channels: int | None, reason: str = "interrupted"
    ) -> None:
        """Declare that `stream`'s next sample should be `seq` (used on resume): a later first
        sample is then recorded as a gap with `reason`."""
        state = self.streams.setdefault(stream, StreamState())
        state.expected_seq = seq
        state.n_channels = n_channels
        state.next_gap_reason = reason

    def _admit(self, message: Message) -> None:
        state = self.streams.setdefault(message.stream, StreamState())
        if isinstance(message, Control):
            if message.kind == "hello":
                self._admit_hello(state, message)
            return
        if state.n_channels is None:
            state.n_channels = message.n_channels
        elif message.n_channels != state.n_channels:
            raise ProtocolError(
                Reject.CHANNELS,
                f"frame has {message.n_channels} channels but stream {message.stream!r} has "
                f"{state.n_channels}; a rig that changes its channels must start a new run",
            )
        if (
            not state.allow_nonfinite
            and message.data.dtype.kind == "f"
            and not np.isfinite(message.data).all()
        ):
            raise ProtocolError(
                Reject.NONFINITE,
                f"frame seq {message.seq} holds NaN/Inf; send finite values or declare "
                '"allow_nonfinite": true in the hello',
            )
        if state.expected_seq is not None and message.seq < state.expected_seq:
            raise ProtocolError(
                Reject.SEQ,
                f"seq {message.seq} went backwards (expected {state.expected_seq}); duplicate "
                "or reordered frame; a restarted rig must send a new hello",
            )
        self._jump_to(state, message.stream, message.seq)
        state.expected_seq = message.seq + message.n_samples

    def _admit_hello(self, state: StreamState, hello: Control) -> None:
        channels = hello.meta.get("channels", hello.meta.get("n_channels"))
        n = len(channels) if isinstance(channels, list) else channels
        if isinstance(n, int) and state.n_channels is not None and n != state.n_channels:
            raise ProtocolError(
                Reject.CHANNELS,
                f"hello announces {n} channels but stream {hello.stream!r} has {state.n_channels}; "
                "refusing to reshape a running stream: start a new run for the new layout",
            )
        if isinstance(n, int):
            state.n_channels = n
        if state.expected_seq is not None and hello.seq < state.expected_seq:
            self._gap(hello.stream, hello.seq, 0, "restart")  # the rig restarted its numbering
        else:  # a periodic hello after lost samples is an ordinary gap
            self._jump_to(state, hello.stream, hello.seq)
        state.expected_seq = hello.seq
        state.meta = hello.meta
        state.allow_nonfinite = bool(hello.meta.get("allow_nonfinite", False))

    def _jump_to(self, state: StreamState, stream: str, seq: int) -> None:
        """Record the samples from the expected seq up to `seq` as missing (if any)."""
        if state.expected_seq is not None and seq > state.expected_seq:
            self._gap(stream, state.expected_seq, seq - state.expected_seq, state.next_gap_reason)
        state.next_gap_reason = "seq"

    def _gap(self, stream: str, first: int, missing: int, reason: str) -> None:
        self.n_gaps += 1
        self.n_missing += missing
        self.events.append(Gap(stream, first, missing, reason))

    def _reject(self, parts: list[Any], exc: ProtocolError, seq: int) -> None:
        self.n_rejected += 1
        stream = ""
        if parts:
            try:
                stream = bytes(
                    parts[0].buffer if hasattr(parts[0], "buffer") else parts[0]
                ).decode()
            except UnicodeDecodeError:
                stream = "<not utf-8>"
        self.events.append(Rejection(stream, exc.code, exc.detail, seq))

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the connection to the sender is up (its handshake done, so a SUB's
        subscription is on its way); True if it came within `timeout` seconds. Needs
        `watch_connection=True`; a PUB drops what it sends before that."""
        if self._monitor is None:
            raise ConfigError("wait_connected needs ZmqSource(..., watch_connection=True)")
        if not self._monitor.poll(math.ceil(timeout * 1000)):
            return False
        self._monitor.recv_multipart()
        return True

    def close(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def __enter__(self) -> ZmqSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A live source for the Open Ephys GUI's ZMQ Interface plugin (plugin 1.x), speaking its own
wire format, and a bridge that re-publishes it as streamlab frames.

The plugin binds a PUB data socket (default port 5556) and a REP socket on the data port + 1
where clients announce themselves. Each data message has three parts:

1. an envelope, `DATA\\0` for continuous data (`EVENT\\0` for events and spikes, ignored here);
2. a UTF-8 JSON header: `message_num` (+1 per message the plugin sends), `type` (`data`),
   `content` {`stream`, `channel_num`, `channel_name`, `num_samples`, `sample_num` (index of
   the first sample), `sample_rate`}, `data_size` (payload bytes) and `timestamp` (wall clock,
   ms);
3. `num_samples` float32 samples of ONE channel.

`OpenEphysSource` subscribes, sends the plugin a heartbeat (`application`, `uuid`, `type:
heartbeat`) every 2 s, and regroups the per-channel messages of one `sample_num` into a
(samples x channels) `Frame` whose `seq` is `sample_num` and `t` is `sample_num / rate` (the
acquisition clock). A jump in `message_num` means messages were lost (a slow subscriber drops
at its high-water mark); a block that then lacks channels is dropped whole and the samples it
should have held are recorded as a gap. It has the shape of `ZmqSource`, so a `Pipeline` can
read it directly; `bridge` re-publishes it in the streamlab wire format, which is how
`streamlab attach --open-ephys` uses it. Older plugin versions (`message_no`, all channels in
one message) are recognised by their header keys and read too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import zmq

from streamlab.errors import ConfigError, ProtocolError
from streamlab.stream.protocol import Control, Frame, Message, Reject
from streamlab.stream.transport import Event, EventLog, Gap, Publisher, Rejection

logger = logging.getLogger(__name__)
HEARTBEAT_EVERY_S = 2.0
KIND = "ephys"


def heartbeat_endpoint(data_endpoint: str) -> str:
    """The plugin's listening (REP) endpoint: the data port + 1."""
    head, sep, port = data_endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"cannot derive the heartbeat port from {data_endpoint!r}; give it explicitly "
            "(the plugin listens on the data port + 1, e.g. tcp://127.0.0.1:5557)"
        )
    return f"{head}:{int(port) + 1}"


@dataclass
class _Block:
    """The channels received so far for one `sample_num`."""

    sample_num: int
    num_samples: int
    rate: float
    channels: dict[int, np.ndarray] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)


class OpenEphysSource(EventLog):
    """Subscribe to an Open Ephys ZMQ Interface data socket and yield streamlab messages.

    `receive()` returns a `Control` hello (once the channel layout is known: `channels` names,
    `rate`, the plugin's stream name), then one `Frame` per complete `sample_num` block, or None
    on timeout. `n_channels` fixes the channel count; without it the layout is learnt from the
    first block, once the next block begins, if it holds channel 0 and no message was lost in
    it (else from the second block: a block caught half-way when joining is discarded, not
    counted as lost). Malformed messages are
    recorded in `events` as `Rejection`s, lost samples as `Gap`s, as `ZmqSource` does."""

    def __init__(
        self,
        endpoint: str,
        *,
        heartbeat: str | None = None,
        stream: str | None = None,
        n_channels: int | None = None,
        application: str = "streamlab",
        hwm: int = 100_000,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.stream = stream
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._heartbeat_endpoint = heartbeat or heartbeat_endpoint(endpoint)
        self._uuid = str(uuid.uuid4())
        self._application = application
        self._req: zmq.Socket | None = None
        self._next_heartbeat = 0.0
        self.heartbeats_answered = 0
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(
                f"cannot connect to the Open Ephys data socket {endpoint}: {exc.strerror}; "
                "endpoints look like tcp://127.0.0.1:5556"
            ) from exc
        self.events: list[Event] = []
        self.n_messages = 0
        self.n_rejected = 0
        self.n_gaps = 0
        self.n_missing = 0
        self.n_missing_messages = 0
        self._layout: list[int] | None = None
        self._names: list[str] = []
        self._fixed_channels = n_channels
        self._pending: _Block | None = None
        self._blocks_seen = 0
        self._last_message: int | None = None
        self._lost_since_emit = False
        self._expected_seq: int | None = None
        self._ready: list[Message] = []
        self._stream_name: str | None = None
        self._send_heartbeat()

    # -- Source protocol ------------------------------------------------------------------
    def receive(self, timeout: float = 0.1) -> Message | None:
        """The next hello or complete frame, or None if none is ready within `timeout` s."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            self._send_heartbeat()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(max(1, math.ceil(remaining * 1000))):
                break
            self._handle(self._sock.recv_multipart())
        return self._ready.pop(0) if self._ready else None

    def expect(
        self, stream: str, seq: int, n_channels: int | None, reason: str = "interrupted"
    ) -> None:
        """On resume: the next sample should be `seq`; a later one is recorded as a gap."""
        self._expected_seq = seq

    def close(self) -> None:
        self._sock.close(linger=0)
        if self._req is not None:
            self._req.close(linger=0)

    def __enter__(self) -> OpenEphysSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- heartbeats -----------------------------------------------------------------------
    def _send_heartbeat(self) -> None:
        """Announce this client to the plugin's REP socket every 2 s (never blocking)."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + HEARTBEAT_EVERY_S
        if self._req is None:
            self._req = self._ctx.socket(zmq.REQ)
            self._req.setsockopt(zmq.LINGER, 0)
            # a plugin that restarted never answers the old request: allow a new one anyway
            self._req.setsockopt(zmq.REQ_RELAXED, 1)
            self._req.setsockopt(zmq.REQ_CORRELATE, 1)
            self._req.connect(self._heartbeat_endpoint)
        while self._req.poll(0):
            self._req.recv()
            self.heartbeats_answered += 1
        beat = {"application": self._application, "uuid": self._uuid, "type": "heartbeat"}
        with contextlib.suppress(zmq.Again):  # the plugin is not there yet: next beat
            self._req.send(json.dumps(beat).encode(), zmq.NOBLOCK)

    # -- messages -------------------------------------------------------------------------
    def _handle(self, parts: list[bytes]) -> None:
        self.n_messages += 1
        try:
            if len(parts) < 2:
                raise ProtocolError(Reject.PARTS, f"{len(parts)} part(s); expected 3")
            envelope = parts[0].rstrip(b"\0")
            header = _header(parts[1])
            self._count_messages(header)
            if envelope != b"DATA" or header.get("type") != "data":
                return  # events, spikes and parameters are not continuous data
            if len(parts) != 3:
                raise ProtocolError(Reject.PARTS, f"data message has {len(parts)} parts, not 3")
            content = header.get("content")
            if isinstance(content, dict) and "channel_num" in content:
                self._add_channel(header, parts[2])
            else:
                self._add_legacy(header, parts[2])
        except ProtocolError as exc:
            self.n_rejected += 1
            self.events.append(Rejection(self._stream_name or "", exc.code, exc.detail))

    def _count_messages(self, header: dict[str, Any]) -> None:
        number = header.get("message_num", header.get("message_no"))
        if not isinstance(number, int):
            raise ProtocolError(Reject.FIELD, "header has no integer message_num")
        if self._last_message is not None and number > self._last_message + 1:
            self.n_missing_messages += number - self._last_message - 1
            self._lost_since_emit = True
        self._last_message = number

    def _add_channel(self, header: dict[str, Any], payload: bytes) -> None:
        content = header["content"]
        channel = _int(content, "channel_num")
        num_samples = _int(content, "num_samples")
        sample_num = _int(content, "sample_num")
        rate = _rate(content)
        samples = _samples(header, payload, num_samples)
        if self._stream_name is None:
            self._stream_name = self.stream or f"openephys/{content.get('stream', 'data')}"
        block = self._pending
        if block is not None and sample_num != block.sample_num:
            self._close_block(block)  # a new block began: the old one stays incomplete
            block = None
        if block is None:
            block = self._pending = _Block(sample_num, num_samples, rate)
        if num_samples != block.num_samples:
            raise ProtocolError(
                Reject.SHAPE,
                f"channel {channel} sends {num_samples} samples at sample_num {sample_num}, "
                f"other channels {block.num_samples}",
            )
        block.channels[channel] = samples
        block.names[channel] = str(content.get("channel_name", f"CH{channel}"))
        if self._layout is not None and len(block.channels) == len(self._layout):
            self._close_block(block)
        elif self._layout is None and self._fixed_channels == len(block.channels):
            self._set_layout(block)
            self._close_block(block)

    def _add_legacy(self, header: dict[str, Any], payload: bytes) -> None:
        """Plugin 0.x: all channels of a block in one message, channel after channel."""
        content = header.get("content")
        if not isinstance(content, dict):
            raise ProtocolError(Reject.FIELD, "data header has no content object")
        n_channels = _int(content, "n_channels")
        num_samples = _int(content, "n_samples")
        sample_num = _int(content, "timestamp")
        rate = _rate(content)
        samples = _samples(header, payload, n_channels * num_samples)
        self._stream_name = self._stream_name or self.stream or "openephys/data"
        block = _Block(sample_num, num_samples, rate)
        for k, row in enumerate(samples.reshape(n_channels, num_samples)):
            block.channels[k], block.names[k] = row, f"CH{k}"
        if self._layout is None:
            self._set_layout(block)
        self._close_block(block)

    def _set_layout(self, block: _Block) -> None:
        self._layout = sorted(block.channels)
        self._names = [block.names[c] for c in self._layout]
        hello = {
            "channels": self._names,
            "channel_nums": self._layout,
            "rate": block.rate,
            "kind": KIND,
            "units": "uV",
            "source": {"format": "open-ephys-zmq", "endpoint": self.endpoint},
        }
        assert self._stream_name is not None
        self._ready.append(
            Control(
                self._stream_name, "hello", block.sample_num, block.sample_num / block.rate, hello
            )
        )

    def _close_block(self, block: _Block) -> None:
        """Emit `block` as a frame if it holds every channel, or, before the layout is known,
        learn it from this block; drop an incomplete block (the next frame shows the gap)."""
        if self._pending is block:
            self._pending = None
        if self._layout is None and self._fixed_channels is not None:
            return  # fewer channels than the caller said: incomplete, and nothing expected yet
        if self._layout is None:
            self._blocks_seen += 1
            # trust the first block if it holds channel 0 (the plugin sends channels in order,
            # so it was not joined half-way) and nothing was lost; else the next whole one
            if (0 in block.channels or self._blocks_seen > 1) and not self._lost_since_emit:
                self._set_layout(block)
                self._emit(block)
            self._lost_since_emit = False
            return
        if set(block.channels) == set(self._layout):
            self._emit(block)

    def _emit(self, block: _Block) -> None:
        assert self._layout is not None and self._stream_name is not None
        seq = block.sample_num
        if self._expected_seq is not None and seq < self._expected_seq:
            self.n_rejected += 1
            self.events.append(
                Rejection(
                    self._stream_name,
                    Reject.SEQ,
                    f"sample_num {seq} went backwards (expected {self._expected_seq}); "
                    "was acquisition restarted?",
                    seq,
                )
            )
            return
        if self._expected_seq is not None and seq > self._expected_seq:
            missing = seq - self._expected_seq
            self.n_gaps += 1
            self.n_missing += missing
            reason = "message_num" if self._lost_since_emit else "seq"
            self.events.append(Gap(self._stream_name, self._expected_seq, missing, reason))
        self._lost_since_emit = False
        data = np.stack([block.channels[c] for c in self._layout], axis=1)
        self._expected_seq = seq + block.num_samples
        self._ready.append(
            Frame(
                self._stream_name,
                data,
                seq,
                seq / block.rate,
                KIND,
                block.rate,
                received_ns=time.perf_counter_ns(),
            )
        )


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(Reject.JSON, f"header is not UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ProtocolError(Reject.JSON, "header is not a JSON object")
    return header


def _int(content: dict[str, Any], key: str) -> int:
    value = content.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(Reject.FIELD, f"content.{key} is {value!r}, not a count")
    return value


def _rate(content: dict[str, Any]) -> float:
    rate = content.get("sample_rate")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
        raise ProtocolError(Reject.FIELD, f"sample_rate {rate!r} is not a positive number")
    return float(rate)


def _samples(header: dict[str, Any], payload: bytes, count: int) -> np.ndarray:
    size = header.get("data_size")
    if len(payload) != count * 4 or (isinstance(size, int) and size != len(payload)):
        raise ProtocolError(
            Reject.SIZE,
            f"payload holds {len(payload)} bytes; {count} float32 samples need {count * 4} "
            f"(data_size says {size})",
        )
    samples = np.frombuffer(payload, dtype="<f4").copy()
    if not np.isfinite(samples).all():
        raise ProtocolError(Reject.NONFINITE, "samples hold NaN/Inf")
    return samples


def bridge(
    source: OpenEphysSource,
    publisher: Publisher,
    *,
    stop: threading.Event,
    on_event: Callable[[Event], None] | None = None,
) -> int:
    """Re-publish `source`'s hello and frames on `publisher` until `stop` is set; returns the
    samples sent. A PUSH publisher with no receiver yet keeps the message and retries, so a
    pipeline that attaches late still gets the hello. Gaps reach the receiver as jumps in
    `seq`; `on_event` sees every gap and rejection (default: logged)."""
    sent = 0
    while not stop.is_set():
        message = source.receive(timeout=0.05)
        for event in source.drain_events():
            (on_event or _log_event)(event)
        while message is not None and not stop.is_set():
            try:
                publisher.send(message)
            except TimeoutError:
                continue
            if isinstance(message, Frame):
                sent += message.n_samples
            message = None
    return sent


def _log_event(event: Event) -> None:
    if isinstance(event, Gap):
        logger.warning("open ephys: %d samples lost from seq %d", event.n_missing, event.first_seq)
    else:
        logger.warning("open ephys: rejected a message (%s: %s)", event.code, event.detail)


class Bridge:
    """`OpenEphysSource` -> streamlab wire format on `publish` (PUSH by default, lossless to a
    local pipeline), in a background thread. `endpoint` is where it actually bound."""

    def __init__(
        self,
        data_endpoint: str,
        publish: str = "tcp://127.0.0.1:0",
        *,
        heartbeat: str | None = None,
        pattern: Literal["pub", "push"] = "push",
        stream: str | None = None,
        n_channels: int | None = None,
    ) -> None:
        self.source = OpenEphysSource(
            data_endpoint, heartbeat=heartbeat, stream=stream, n_channels=n_channels
        )
        self.publisher = Publisher(publish, pattern=pattern, send_timeout=1.0)
        self.endpoint = self.publisher.endpoint
        self._stop = threading.Event()
        self.failure: BaseException | None = None
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="streamlab-open-ephys", daemon=True)

    def start(self) -> Bridge:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.sent = bridge(self.source, self.publisher, stop=self._stop)
        except BaseException as exc:  # reported by close()
            self.failure = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.source.close()
        self.publisher.close(linger=0)
        if self.failure is not None:
            raise self.failure

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

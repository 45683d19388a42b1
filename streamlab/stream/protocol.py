"""The wire protocol of DESIGN.md: one frame is one multipart message of topic, JSON header and
raw C-order payload. Encoding and decoding are pure functions; nothing is ever unpickled.

Decoding checks every field and raises `ProtocolError` with a stable `code` (see `Reject`) and a
detail that says what was wrong, so a receiver can count and record the rejection and go on.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from streamlab.errors import ProtocolError

PROTOCOL_VERSION = 1
CONTROL_KINDS = frozenset({"hello", "eos"})
MAX_SEQ = 2**64 - 1


class Reject(StrEnum):
    """Why a message was rejected; the value is what the store records."""

    PARTS = "parts"  # not exactly three parts
    TOPIC = "topic"  # topic empty or not UTF-8
    JSON = "json"  # header is not UTF-8 JSON or not an object
    FIELD = "field"  # a required field is missing or of the wrong type
    VERSION = "version"  # unsupported protocol version
    KIND = "kind"  # kind is not a non-empty word
    DTYPE = "dtype"  # dtype unknown or not a plain numeric type
    SHAPE = "shape"  # shape is not [m, n] of non-negative integers
    SIZE = "size"  # payload length does not match shape x itemsize
    HELLO = "hello"  # hello payload is not a JSON object, or eos carries a payload
    NONFINITE = "nonfinite"  # NaN/Inf in a stream that did not declare them
    CHANNELS = "channels"  # channel count differs from the stream's
    SEQ = "seq"  # sequence number went backwards (duplicate or reordered)


@dataclass(frozen=True, slots=True)
class Frame:
    """Consecutive samples of one stream: `data` is (m samples, n channels), `seq` numbers the
    first sample (+1 per sample), `t` is its acquisition time in seconds on the source's clock.

    `received_ns` is local (never on the wire): the receiver's `perf_counter_ns` at arrival, the
    start of every latency measurement."""

    stream: str
    data: np.ndarray
    seq: int
    t: float
    kind: str = "spikes"
    rate: float | None = None
    received_ns: int = field(default=0, compare=False)

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True, slots=True)
class Control:
    """A `hello` (stream metadata in `meta`) or an `eos`; `seq` is the next data sample's."""

    stream: str
    kind: str
    seq: int
    t: float
    meta: dict[str, Any] = field(default_factory=dict)
    received_ns: int = field(default=0, compare=False)


Message = Frame | Control


def encode(message: Message) -> list[bytes | memoryview]:
    """The three parts of `message`; the payload is a view of the array (no copy when
    C-contiguous), so `send_multipart(parts, copy=False)` is zero-copy for large frames."""
    topic = message.stream.encode("utf-8")
    if not topic:
        raise ProtocolError(Reject.TOPIC, "stream name is empty; name it like 'rig1/spikes'")
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "seq": int(message.seq), "t": float(message.t)}
    if isinstance(message, Control):
        if message.kind not in CONTROL_KINDS:
            raise ProtocolError(
                Reject.KIND, f"control kind must be hello or eos, not {message.kind!r}"
            )
        header["kind"] = message.kind
        payload = json.dumps(message.meta).encode("utf-8") if message.kind == "hello" else b""
        return [topic, json.dumps(header).encode("utf-8"), payload]
    data = np.ascontiguousarray(message.data)
    if data.ndim != 2:
        raise ProtocolError(
            Reject.SHAPE, f"frame data must be 2-D (samples, channels), got {data.shape}"
        )
    dtype = _check_dtype(data.dtype.str).str
    rate = "" if message.rate is None else f', "rate": {_json_number(float(message.rate))}'
    # formatted rather than json.dumps'd (a few microseconds per frame on the closed loop's
    # path), to the same bytes json.dumps gives
    text = (
        f'{{"v": {PROTOCOL_VERSION}, "seq": {int(message.seq)}, '
        f'"t": {_json_number(float(message.t))}, "kind": {_json_string(message.kind)}, '
        f'"dtype": "{dtype}", "shape": [{data.shape[0]}, {data.shape[1]}]{rate}}}'
    )
    return [topic, text.encode("utf-8"), memoryview(data).cast("B")]


def _json_number(value: float) -> str:
    """`value` as json.dumps writes a float."""
    return repr(value) if math.isfinite(value) else json.dumps(value)


@functools.lru_cache(maxsize=256)
def _json_string(text: str) -> str:
    """`text` as json.dumps writes a string (kinds repeat: cached)."""
    return json.dumps(text)


def decode(parts: Sequence[Any], received_ns: int = 0) -> Message:
    """Parse one multipart message (bytes, memoryviews or `zmq.Frame`s) into a Frame or Control.

    Raises `ProtocolError` on the first rule broken. The returned array is a read-only view of
    the payload buffer."""
    if len(parts) != 3:
        raise ProtocolError(
            Reject.PARTS, f"expected 3 parts (topic, header, payload), got {len(parts)}"
        )
    topic_b, header_b, payload = (_buffer(p) for p in parts)
    try:
        stream = bytes(topic_b).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(Reject.TOPIC, "topic is not UTF-8") from None
    if not stream:
        raise ProtocolError(Reject.TOPIC, "topic is empty; it must name the stream")
    try:
        header = json.loads(bytes(header_b).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(Reject.JSON, f"header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(
            Reject.JSON, f"header must be a JSON object, got {type(header).__name__}"
        )
    version = _field(header, "v", int)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            Reject.VERSION, f"protocol version {version} is not supported (this receiver speaks 1)"
        )
    seq = _field(header, "seq", int)
    if not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(Reject.FIELD, f"seq {seq} is outside uint64")
    t = float(_field(header, "t", (int, float)))
    if not math.isfinite(t):
        raise ProtocolError(Reject.FIELD, f"t must be a finite number of seconds, got {t}")
    kind = _field(header, "kind", str)
    if not kind or not kind.replace("_", "").replace("-", "").isalnum():
        raise ProtocolError(Reject.KIND, f"kind must be a non-empty word, got {kind!r}")
    if kind in CONTROL_KINDS:
        return _decode_control(stream, kind, seq, t, payload, received_ns)
    dtype = _check_dtype(_field(header, "dtype", str))
    shape = _field(header, "shape", list)
    if len(shape) != 2 or not all(type(s) is int and s >= 0 for s in shape):
        raise ProtocolError(
            Reject.SHAPE, f"shape must be [samples, channels] of integers >= 0, got {shape}"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise ProtocolError(Reject.SHAPE, f"shape {shape} holds no samples")
    expected = shape[0] * shape[1] * dtype.itemsize
    if len(payload) != expected:
        raise ProtocolError(
            Reject.SIZE,
            f"payload is {len(payload)} bytes but shape {shape} of {dtype.str} needs {expected}",
        )
    rate = header.get("rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ProtocolError(Reject.FIELD, f"rate must be a positive number of Hz, got {rate!r}")
        rate = float(rate)
    data = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return Frame(stream, data, seq, t, kind, rate, received_ns)


def _decode_control(
    stream: str, kind: str, seq: int, t: float, payload: memoryview, received_ns: int
) -> Control:
    if kind == "eos":
        if len(payload):
            raise ProtocolError(
                Reject.HELLO, f"eos must have an empty payload, got {len(payload)} bytes"
            )
        return Control(stream, kind, seq, t, {}, received_ns)
    try:
        meta = json.loads(bytes(payload).decode("utf-8")) if len(payload) else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(Reject.HELLO, f"hello payload is not UTF-8 JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ProtocolError(Reject.HELLO, "hello payload must be a JSON object of stream metadata")
    return Control(stream, kind, seq, t, meta, received_ns)


def _buffer(part: Any) -> memoryview:
    buffer = getattr(part, "buffer", None)  # zmq.Frame
    return memoryview(buffer if buffer is not None else part).cast("B")


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in header:
        raise ProtocolError(Reject.FIELD, f"header lacks required field {name!r}")
    value = header[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ProtocolError(Reject.FIELD, f"field {name!r} has the wrong type: {value!r}")
    return value


@functools.lru_cache(maxsize=64)
def _check_dtype(text: str) -> np.dtype:
    """The plain numeric dtype `text` names (cached: every frame of a stream names the same)."""
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        raise ProtocolError(
            Reject.DTYPE, f"unknown dtype {text!r}; use a NumPy string like '<f4'"
        ) from None
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolError(
            Reject.DTYPE, f"dtype {text!r} is not a plain bool, integer or float type"
        )
    return dtype

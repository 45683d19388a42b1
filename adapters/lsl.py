"""A live source for Lab Streaming Layer (LSL) streams, read with pylsl.

`LslSource` resolves one stream by name and/or type on the local network, pulls chunks into a
preallocated NumPy buffer (pylsl's fast path), and yields streamlab messages: a `hello` with the
channel labels from the stream's description, its nominal rate and source id, then one `Frame`
per chunk. `Frame.t` is the LSL timestamp of the chunk's first sample (the sender's clock, as
DESIGN asks: "the source's clock"); every sample's timestamp of the last chunk is kept in
`last_timestamps`, and `time_correction()` gives the offset to this machine's LSL clock.

LSL has no sequence numbers: `seq` counts the samples pulled, from 0. LSL's TCP transport does
not lose samples while the inlet keeps up; samples that overflow the inlet's buffer
(`max_buffered` seconds) are dropped by liblsl without telling, so this source cannot report
them as gaps.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamlab.errors import ConfigError, SessionError
from streamlab.stream.protocol import Control, Frame, Message
from streamlab.stream.transport import Event, EventLog

# pylsl channel formats (cf_*) to NumPy dtypes; strings are not streamable here
_FORMATS = {1: np.float32, 2: np.float64, 4: np.int32, 5: np.int16, 6: np.int8, 7: np.int64}


def _pylsl() -> Any:
    try:
        import pylsl
    except (ImportError, RuntimeError) as exc:  # RuntimeError: the wheel's liblsl did not load
        raise ConfigError(
            f"LSL needs pylsl with a loadable liblsl: pip install 'streamlab[lsl]' ({exc})"
        ) from exc
    return pylsl


class LslSource(EventLog):
    """Resolve an LSL stream (`name` and/or `type`, within `timeout` s) and yield its chunks as
    frames; `stream` names the streamlab stream (default `lsl/<name>`), `kind` its kind."""

    def __init__(
        self,
        name: str | None = None,
        type: str | None = None,  # LSL's own word for it
        *,
        timeout: float = 5.0,
        stream: str | None = None,
        kind: str | None = None,
        max_chunk: int = 1024,
        max_buffered: int = 360,
    ) -> None:
        if name is None and type is None:
            raise ConfigError("give an LSL stream name or type (or both) to resolve")
        pylsl = _pylsl()
        found = _resolve(pylsl, name, type, timeout)
        if not found:
            wanted = " and ".join(
                f"{key}={value!r}" for key, value in (("name", name), ("type", type)) if value
            )
            raise SessionError(
                f"no LSL stream with {wanted} appeared within {timeout} s; is the sender "
                "running on this network (and multicast/broadcast allowed)?"
            )
        self._inlet = pylsl.StreamInlet(found[0], max_buflen=max_buffered, max_chunklen=0)
        self._inlet.open_stream(timeout=timeout)
        info = self._inlet.info()
        fmt = info.channel_format()
        if fmt not in _FORMATS:
            raise SessionError(
                f"LSL stream {info.name()!r} carries channel format {fmt} (strings or "
                "undefined); streamlab streams numbers"
            )
        self.n_channels = info.channel_count()
        self.rate = float(info.nominal_srate())
        self.stream = stream or f"lsl/{info.name()}"
        self.kind = kind or (info.type().lower() or "signal")
        self.meta = {
            "channels": _labels(info) or [f"ch{i}" for i in range(self.n_channels)],
            "rate": self.rate or None,
            "kind": self.kind,
            "source": {
                "format": "lsl",
                "name": info.name(),
                "type": info.type(),
                "source_id": info.source_id(),
                "hostname": info.hostname(),
                "irregular": self.rate == 0,
            },
        }
        self._buffer = np.empty((max_chunk, self.n_channels), dtype=_FORMATS[fmt])
        self._hello_sent = False
        self.seq = 0
        self.last_timestamps = np.empty(0)
        self.events: list[Event] = []

    def receive(self, timeout: float = 0.1) -> Message | None:
        """The hello first, then the next chunk as a frame (None if nothing in `timeout` s)."""
        if not self._hello_sent:
            self._hello_sent = True
            return Control(self.stream, "hello", 0, 0.0, dict(self.meta))
        # pull_chunk with a timeout waits for a full chunk; wait for one sample instead, then
        # take whatever else is already there
        sample, first = self._inlet.pull_sample(timeout=timeout)
        if sample is None:
            return None
        self._buffer[0] = sample
        _, stamps = self._inlet.pull_chunk(
            timeout=0.0, max_samples=self._buffer.shape[0] - 1, dest_obj=self._buffer[1:]
        )
        n = 1 + len(stamps)
        self.last_timestamps = np.asarray([first, *stamps], dtype=np.float64)
        frame = Frame(
            self.stream,
            self._buffer[:n].copy(),
            self.seq,
            float(first),
            self.kind,
            self.rate or None,
            received_ns=time.perf_counter_ns(),
        )
        self.seq += n
        return frame

    def time_correction(self, timeout: float = 2.0) -> float:
        """Seconds to add to this stream's timestamps to put them on this machine's LSL clock."""
        return float(self._inlet.time_correction(timeout=timeout))

    def expect(
        self, stream: str, seq: int, n_channels: int | None, reason: str = "interrupted"
    ) -> None:
        """On resume: continue numbering from `seq` (LSL cannot replay what was missed)."""
        self.seq = seq

    def close(self) -> None:
        self._inlet.close_stream()

    def __enter__(self) -> LslSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(pylsl: Any, name: str | None, type_: str | None, timeout: float) -> list[Any]:
    if name is not None and type_ is not None:
        for value in (name, type_):
            if "'" in value:
                raise ConfigError(f"LSL name/type {value!r} may not contain a quote")
        return list(pylsl.resolve_bypred(f"name='{name}' and type='{type_}'", 1, timeout))
    key, value = ("name", name) if name is not None else ("type", type_)
    return list(pylsl.resolve_byprop(key, value, 1, timeout))


def _labels(info: Any) -> list[str]:
    """Channel labels from the stream description (`channels/channel/label`), if all present."""
    labels = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty():
        labels.append(channel.child_value("label"))
        channel = channel.next_sibling()
    return labels if len(labels) == info.channel_count() and all(labels) else []

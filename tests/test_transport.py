"""Real pyzmq sockets on loopback: gaps by seq, every rejection recorded with its reason and the
stream going on, hello handling, and PUSH/PULL losing nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamlab.errors import ConfigError
from streamlab.stream import Control, Frame, Gap, Publisher, Rejection, ZmqSource, play
from streamlab.stream.protocol import Reject


def receive_all(source: ZmqSource, until_eos: bool = True, timeout: float = 5.0) -> list:
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = source.receive(timeout=0.2)
        if message is None:
            continue
        messages.append(message)
        if until_eos and isinstance(message, Control) and message.kind == "eos":
            return messages
    raise AssertionError(f"no eos within {timeout} s; got {len(messages)} messages")


@pytest.fixture
def push_pull(endpoint):
    publisher = Publisher(endpoint, pattern="push", send_timeout=5.0)
    source = ZmqSource(publisher.endpoint, pattern="pull")
    yield publisher, source
    source.close()
    publisher.close(linger=0)


def frame(seq: int, n: int = 3, m: int = 1, dtype: str = "<f4", value: float = 1.0) -> Frame:
    return Frame(
        "rig/spikes", np.full((m, n), value, dtype=dtype), seq, seq / 100.0, "spikes", 100.0
    )


def test_gap_detected_by_seq_and_stream_goes_on(push_pull) -> None:
    publisher, source = push_pull
    publisher.hello("rig/spikes", 0, 0.0, {"n_channels": 3, "rate": 100.0})
    for seq in (0, 1, 2, 7, 8):  # 3..6 never sent
        publisher.send(frame(seq))
    publisher.send(frame(9, m=4))  # a multi-sample frame: next expected is 13
    publisher.send(frame(13))
    publisher.eos("rig/spikes", 14, 0.14)
    messages = receive_all(source)
    frames = [m for m in messages if isinstance(m, Frame)]
    assert [f.seq for f in frames] == [0, 1, 2, 7, 8, 9, 13]
    events = source.drain_events()
    assert events == [Gap("rig/spikes", 3, 4, "seq", events[0].wall_time)]
    assert (source.n_gaps, source.n_missing, source.n_rejected) == (1, 4, 0)
    assert all(f.received_ns > 0 for f in frames)


def test_each_bad_message_is_rejected_recorded_and_skipped(push_pull) -> None:
    publisher, source = push_pull
    publisher.hello("rig/spikes", 0, 0.0, {"n_channels": 3})
    publisher.send(frame(0))
    publisher.send_raw([b"rig/spikes", b"{oops", b""])  # bad JSON
    publisher.send_raw(
        [b"rig/spikes", b'{"v": 1, "seq": 1, "t": 0, "kind": "spikes", "shape": [1, 3]}', b"x" * 12]
    )
    publisher.send_raw(
        [
            b"rig/spikes",
            b'{"v": 1, "seq": 1, "t": 0, "kind": "spikes", "dtype": "<f4", "shape": [1, 3]}',
            b"x" * 5,
        ]
    )
    publisher.send_raw(
        [
            b"rig/spikes",
            b'{"v": 9, "seq": 1, "t": 0, "kind": "spikes", "dtype": "<f4", "shape": [1, 3]}',
            b"x" * 12,
        ]
    )
    publisher.send(frame(1, value=np.nan))  # NaN in a stream that did not allow it
    publisher.send(frame(1, n=5))  # channel count changed
    publisher.send(frame(1))
    publisher.send(frame(0))  # went backwards
    publisher.send(frame(2))
    publisher.eos("rig/spikes", 3, 0.03)
    frames = [m for m in receive_all(source) if isinstance(m, Frame)]
    assert [f.seq for f in frames] == [0, 1, 2]
    rejections = [e for e in source.drain_events() if isinstance(e, Rejection)]
    assert [r.code for r in rejections] == [
        Reject.JSON,
        Reject.FIELD,
        Reject.SIZE,
        Reject.VERSION,
        Reject.NONFINITE,
        Reject.CHANNELS,
        Reject.SEQ,
    ]
    assert rejections[4].seq == 1 and rejections[6].seq == 0
    assert "dtype" in rejections[1].detail
    assert "allow_nonfinite" in rejections[4].detail
    assert source.n_rejected == 7 and source.n_gaps == 0


def test_hello_may_allow_nonfinite_values(push_pull) -> None:
    publisher, source = push_pull
    publisher.hello("rig/calcium", 0, 0.0, {"n_channels": 3, "allow_nonfinite": True})
    publisher.send(Frame("rig/calcium", np.full((1, 3), np.inf, "<f4"), 0, 0.0, "calcium"))
    publisher.eos("rig/calcium", 1, 0.0)
    frames = [m for m in receive_all(source) if isinstance(m, Frame)]
    assert len(frames) == 1 and source.n_rejected == 0


def test_restart_with_new_hello_is_a_recorded_restart_and_new_channel_count_refused(
    push_pull,
) -> None:
    publisher, source = push_pull
    publisher.hello("rig/spikes", 0, 0.0, {"n_channels": 3})
    publisher.send(frame(0))
    publisher.send(frame(1))
    publisher.hello("rig/spikes", 0, 5.0, {"n_channels": 3})  # the rig restarted its numbering
    publisher.send(frame(0))
    publisher.hello("rig/spikes", 1, 6.0, {"n_channels": 8})  # and now claims 8 channels
    publisher.send(frame(1))
    publisher.eos("rig/spikes", 2, 7.0)
    frames = [m for m in receive_all(source) if isinstance(m, Frame)]
    assert [f.seq for f in frames] == [0, 1, 0, 1]
    events = source.drain_events()
    assert isinstance(events[0], Gap) and (
        events[0].reason,
        events[0].first_seq,
        events[0].n_missing,
    ) == ("restart", 0, 0)
    assert isinstance(events[1], Rejection) and events[1].code == Reject.CHANNELS
    assert "start a new run" in events[1].detail


def test_expect_records_interruption_as_gap(push_pull) -> None:
    publisher, source = push_pull
    source.expect("rig/spikes", 10, 3, "interrupted")
    publisher.send(frame(25))
    publisher.eos("rig/spikes", 26, 0.0)
    receive_all(source)
    (gap,) = source.drain_events()
    assert (gap.first_seq, gap.n_missing, gap.reason) == (10, 15, "interrupted")


def test_push_pull_replay_loses_nothing_under_backpressure(endpoint) -> None:
    publisher = Publisher(endpoint, pattern="push", hwm=10, send_timeout=10.0)
    source = ZmqSource(publisher.endpoint, pattern="pull", hwm=10)
    data = np.arange(3000 * 4, dtype="<u2").reshape(3000, 4)
    sender = threading.Thread(
        target=play,
        args=(publisher, "replay/x", [data]),
        kwargs={"rate": 1000.0, "realtime": False, "hello_every": None},
    )
    sender.start()
    received = []
    try:
        while True:
            message = source.receive(timeout=5.0)
            assert message is not None, "receiver starved"
            if isinstance(message, Control) and message.kind == "eos":
                break
            if isinstance(message, Frame):
                received.append(message.data)
                time.sleep(0.0001 if len(received) % 100 else 0.02)  # a slow consumer
    finally:
        sender.join(timeout=10)
        source.close()
        publisher.close(linger=0)
    np.testing.assert_array_equal(np.concatenate(received), data)
    assert source.n_gaps == 0


def test_pub_sub_slow_consumer_drops_are_counted_as_gaps_and_queues_stay_bounded(endpoint) -> None:
    """A live PUB rig far faster than its consumer: the rig never blocks, what the high-water
    marks drop comes back as gaps with exact counts (every sample is either received or counted
    missing), and what is queued stays bounded (the two HWMs plus the kernel's socket buffers:
    16 KiB frames, so those hold a few hundred)."""
    hwm, total = 50, 3000
    publisher = Publisher(endpoint, pattern="pub", hwm=hwm)
    source = ZmqSource(publisher.endpoint, pattern="sub", hwm=hwm, watch_connection=True)
    try:
        assert source.wait_connected(10)
        time.sleep(0.3)  # the subscription reaches the rig
        start = time.perf_counter()
        for seq in range(total):
            publisher.send(frame(seq, n=4096))
        sending = time.perf_counter() - start
        received, last = [], None
        while (message := source.receive(timeout=0.5)) is not None:
            received.append(message.seq)
            last = message.seq
            time.sleep(0.001)  # a consumer ~1 ms per frame: far slower than the rig
    finally:
        source.close()
        publisher.close(linger=0)
    missing = sum(event.n_missing for event in source.events if isinstance(event, Gap))
    assert last is not None and len(received) < total / 2  # most were dropped, not queued
    assert len(received) + missing == last + 1 - received[0]  # each one received or counted
    assert len(received) <= 2 * hwm + 1000 * sending + 600  # bounded queues
    assert source.n_gaps >= 1


def test_pub_sub_with_topic_filter(endpoint) -> None:
    publisher = Publisher(endpoint, pattern="pub")
    source = ZmqSource(publisher.endpoint, pattern="sub", topic="rig/spikes")
    try:
        time.sleep(0.3)  # slow joiner: let the subscription reach the publisher
        publisher.send(Frame("rig/behavior", np.zeros((1, 2), "<f4"), 0, 0.0, "behavior"))
        publisher.send(frame(0))
        publisher.eos("rig/spikes", 1, 0.0)
        messages = receive_all(source)
        assert [m.stream for m in messages] == ["rig/spikes", "rig/spikes"]
    finally:
        source.close()
        publisher.close(linger=0)


def test_bind_conflict_names_the_endpoint(endpoint) -> None:
    with Publisher(endpoint) as first, pytest.raises(ConfigError, match="cannot bind"):
        Publisher(first.endpoint)


def test_spinning_source_receives_the_same_messages_and_still_times_out(endpoint) -> None:
    """`spin` busy-waits before the blocking poll: every message arrives as without it, in
    order, a quiet socket still returns None after the timeout, and a bad budget is refused."""
    publisher = Publisher(endpoint, pattern="push", send_timeout=5.0)
    source = ZmqSource(publisher.endpoint, pattern="pull", spin=0.01)
    try:
        start = time.monotonic()
        assert source.receive(timeout=0.05) is None
        assert time.monotonic() - start >= 0.045
        publisher.hello("rig/spikes", 0, 0.0, {"n_channels": 3, "rate": 100.0})
        for seq in range(20):
            publisher.send(frame(seq, value=seq))
        publisher.eos("rig/spikes", 20, 0.2)
        frames = [m for m in receive_all(source) if isinstance(m, Frame)]
        assert [f.seq for f in frames] == list(range(20))
        assert [float(f.data[0, 0]) for f in frames] == list(range(20))
    finally:
        source.close()
        publisher.close(linger=0)
    for bad in (-0.001, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="spin must be"):
            ZmqSource(endpoint, spin=bad)

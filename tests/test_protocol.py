"""The wire protocol: round trips across dtypes and shapes (property test), and every kind of
malformed message rejected with its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamlab.errors import ProtocolError
from streamlab.stream.protocol import Control, Frame, Reject, decode, encode

DTYPES = ["<f4", "<f8", ">f4", "<u2", "<u1", "<i2", "<i4", "<u8", "|b1", "<f2"]


def parts_of(message) -> list[bytes]:
    return [bytes(p) for p in encode(message)]


@settings(max_examples=200, deadline=None)
@given(
    data=st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt), hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=17)
        )
    ),
    seq=st.integers(0, 2**64 - 1),
    t=st.floats(allow_nan=False, allow_infinity=False),
    kind=st.sampled_from(["spikes", "calcium", "behavior", "lfp_band-2"]),
    rate=st.none() | st.floats(min_value=1e-3, max_value=1e6),
    stream=st.text(min_size=1, max_size=20),
)
def test_frame_round_trip(data, seq, t, kind, rate, stream) -> None:
    frame = Frame(stream, data, seq, t, kind, rate)
    back = decode(parts_of(frame))
    assert isinstance(back, Frame)
    assert back.stream == stream
    assert (back.seq, back.t, back.kind, back.rate) == (seq, t, kind, rate)
    assert back.data.dtype == data.dtype
    assert back.data.shape == data.shape
    np.testing.assert_array_equal(back.data, data)  # NaN == NaN here, bitwise payload
    assert back.data.tobytes() == np.ascontiguousarray(data).tobytes()


@given(
    meta=st.dictionaries(
        st.text(max_size=8), st.integers() | st.text(max_size=8) | st.booleans(), max_size=5
    ),
    seq=st.integers(0, 2**64 - 1),
)
def test_control_round_trip(meta, seq) -> None:
    hello = decode(parts_of(Control("rig/x", "hello", seq, 1.5, meta)))
    assert hello == Control("rig/x", "hello", seq, 1.5, meta)
    eos = decode(parts_of(Control("rig/x", "eos", seq, 2.0)))
    assert eos == Control("rig/x", "eos", seq, 2.0, {})


def test_control_headers_carry_only_v_seq_t_kind() -> None:
    header = json.loads(parts_of(Control("rig", "hello", 3, 0.0, {"rate": 30}))[1])
    assert set(header) == {"v", "seq", "t", "kind"}


def test_non_contiguous_arrays_are_sent_in_c_order() -> None:
    data = np.arange(24, dtype="<f4").reshape(4, 6)[:, ::2]
    back = decode(parts_of(Frame("s", data, 0, 0.0)))
    np.testing.assert_array_equal(back.data, data)


def good_parts(**header_changes) -> list[bytes]:
    header = {"v": 1, "seq": 5, "t": 0.25, "kind": "spikes", "dtype": "<u2", "shape": [2, 3]}
    header.update(header_changes)
    header = {k: v for k, v in header.items() if v is not None}
    return [b"rig/spikes", json.dumps(header).encode(), np.zeros((2, 3), "<u2").tobytes()]


MALFORMED = [
    ("two parts", good_parts()[:2], Reject.PARTS),
    ("four parts", [*good_parts(), b""], Reject.PARTS),
    ("topic not utf-8", [b"\xff\xfe", *good_parts()[1:]], Reject.TOPIC),
    ("empty topic", [b"", *good_parts()[1:]], Reject.TOPIC),
    ("bad json", [b"rig", b"{not json", b""], Reject.JSON),
    ("json not an object", [b"rig", b"[1, 2]", b""], Reject.JSON),
    ("missing seq", good_parts(seq=None), Reject.FIELD),
    ("missing dtype", good_parts(dtype=None), Reject.FIELD),
    ("missing shape", good_parts(shape=None), Reject.FIELD),
    ("seq is a string", good_parts(seq="5"), Reject.FIELD),
    ("negative seq", good_parts(seq=-1), Reject.FIELD),
    ("seq beyond uint64", good_parts(seq=2**64), Reject.FIELD),
    ("t is NaN", [b"rig", b'{"v": 1, "seq": 0, "t": NaN, "kind": "eos"}', b""], Reject.FIELD),
    ("wrong version", good_parts(v=2), Reject.VERSION),
    ("version missing", good_parts(v=None), Reject.FIELD),
    ("kind empty", good_parts(kind=""), Reject.KIND),
    ("unknown dtype", good_parts(dtype="<q9"), Reject.DTYPE),
    ("object dtype", good_parts(dtype="|O"), Reject.DTYPE),
    ("complex dtype", good_parts(dtype="<c8"), Reject.DTYPE),
    ("structured dtype", good_parts(dtype="f4,i4"), Reject.DTYPE),
    ("1-D shape", good_parts(shape=[6]), Reject.SHAPE),
    ("negative shape", good_parts(shape=[-2, -3]), Reject.SHAPE),
    ("zero samples", good_parts(shape=[0, 3]), Reject.SHAPE),
    ("short payload", [*good_parts()[:2], b"\x00" * 11], Reject.SIZE),
    ("long payload", [*good_parts()[:2], b"\x00" * 13], Reject.SIZE),
    ("rate not positive", good_parts(rate=0), Reject.FIELD),
    (
        "hello payload not json",
        [b"rig", b'{"v": 1, "seq": 0, "t": 0, "kind": "hello"}', b"\x80x"],
        Reject.HELLO,
    ),
    (
        "hello payload a list",
        [b"rig", b'{"v": 1, "seq": 0, "t": 0, "kind": "hello"}', b"[]"],
        Reject.HELLO,
    ),
    (
        "eos with payload",
        [b"rig", b'{"v": 1, "seq": 0, "t": 0, "kind": "eos"}', b"x"],
        Reject.HELLO,
    ),
]


@pytest.mark.parametrize(("case", "parts", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_are_rejected_with_a_reason(case, parts, code) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(parts)
    assert info.value.code == code, case
    assert info.value.detail  # says what was wrong


def test_decoded_frames_are_read_only_views_never_unpickled() -> None:
    frame = decode(good_parts())
    assert not frame.data.flags.writeable
    pickled = [
        b"rig",
        json.dumps(
            {"v": 1, "seq": 0, "t": 0, "kind": "x", "dtype": "|O", "shape": [1, 1]}
        ).encode(),
        b"\x80\x04N.",
    ]
    with pytest.raises(ProtocolError, match="dtype"):
        decode(pickled)


def test_a_header_claiming_a_huge_shape_is_refused_before_any_allocation() -> None:
    import tracemalloc

    parts = good_parts(shape=[10**6, 10**6])  # 10^12 elements, with a 12-byte payload
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            decode(parts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == Reject.SIZE
    assert peak < 1_000_000


@settings(max_examples=1500, deadline=None)
@given(
    base=st.sampled_from([0, 1, 2]),
    flips=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 400), st.integers(0, 255)), max_size=6
    ),
    cut=st.none() | st.tuples(st.integers(0, 2), st.integers(0, 400)),
    extra=st.lists(st.binary(max_size=40), max_size=2),
)
def test_mutated_messages_decode_or_are_rejected_with_a_reason(base, flips, cut, extra) -> None:
    """Byte flips, truncations and extra parts of valid frames, hellos and eos: decoding either
    gives a message or raises ProtocolError with a code and a detail, never anything else."""
    valid = [
        good_parts(),
        parts_of(Control("rig", "hello", 0, 0.0, {"channels": ["a", "b"], "rate": 100.0})),
        parts_of(Control("rig", "eos", 9, 1.0)),
    ][base]
    parts = [bytearray(part) for part in valid]
    for index, position, value in flips:
        if parts[index]:
            parts[index][position % len(parts[index])] = value
    if cut is not None:
        index, length = cut
        parts[index] = parts[index][:length]
    error: ProtocolError | None = None
    try:
        decode([bytes(part) for part in parts] + extra)
    except ProtocolError as exc:
        error = exc
    assert error is None or (isinstance(error.code, Reject) and error.detail)

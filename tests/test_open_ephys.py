"""The Open Ephys ZMQ Interface source against a loopback stand-in for the plugin, written here
from the plugin's documented format (envelope, JSON header with message_num/type/content/
data_size/timestamp, one channel of float32 samples per message; heartbeats to its REP socket
on the data port + 1), not from our own encoder: regrouping, a lost message, a malformed one,
and `streamlab attach --open-ephys` writing a store."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import numpy as np
import pytest
import zmq
from streamlab.adapters.open_ephys import Bridge, OpenEphysSource

from streamlab.store.inspect import describe
from streamlab.store.run_store import RunStore
from streamlab.stream import Control, Frame, Gap, Rejection, ZmqSource

from .conftest import streamlab_command

RATE = 30000.0
CHANNELS = 4
SAMPLES = 50


class FakePlugin:
    """Binds a PUB data socket and, on the next port, a REP socket that answers heartbeats as
    the plugin does; sends continuous data one channel per message."""

    def __init__(self) -> None:
        self.ctx = zmq.Context.instance()
        for _ in range(20):  # the heartbeat port must be free too
            self.pub = self.ctx.socket(zmq.PUB)
            port = self.pub.bind_to_random_port("tcp://127.0.0.1")
            self.rep = self.ctx.socket(zmq.REP)
            try:
                self.rep.bind(f"tcp://127.0.0.1:{port + 1}")
                break
            except zmq.ZMQError:
                self.rep.close(linger=0)
                self.pub.close(linger=0)
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.heartbeats: list[dict] = []
        self.message_num = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def _answer(self) -> None:
        while not self._stop.is_set():
            if self.rep.poll(50):
                self.heartbeats.append(json.loads(self.rep.recv()))
                self.rep.send(b"heartbeat received")

    def wait_for_client(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while not self.heartbeats and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.heartbeats, "no heartbeat reached the plugin's REP socket"
        time.sleep(0.5)  # the SUB connected with it; let its subscription arrive
        return self.heartbeats[0]

    def block(self, sample_num: int, data: np.ndarray, lose: tuple[int, ...] = ()) -> None:
        """Send `data` (samples x channels) as one message per channel; channels in `lose`
        are numbered but never sent (a drop on the way)."""
        for channel in range(data.shape[1]):
            self.message_num += 1
            if channel in lose:
                continue
            header = {
                "message_num": self.message_num,
                "type": "data",
                "content": {
                    "stream": "example_data",
                    "channel_num": channel,
                    "channel_name": f"CH{channel + 1}",
                    "num_samples": data.shape[0],
                    "sample_num": sample_num,
                    "sample_rate": RATE,
                },
                "data_size": data.shape[0] * 4,
                "timestamp": int(time.time() * 1000),
            }
            payload = np.ascontiguousarray(data[:, channel], dtype="<f4").tobytes()
            self.pub.send_multipart([b"DATA\x00", json.dumps(header).encode(), payload])

    def ttl_event(self, sample_num: int) -> None:
        self.message_num += 1
        header = {
            "message_num": self.message_num,
            "type": "event",
            "content": {"stream": "example_data", "type": 3, "sample_num": sample_num},
            "data_size": 10,
            "timestamp": int(time.time() * 1000),
        }
        self.pub.send_multipart([b"EVENT\x00", json.dumps(header).encode(), bytes(10)])

    def torn(self, sample_num: int) -> None:
        """A data message whose payload is shorter than it says."""
        self.message_num += 1
        header = {
            "message_num": self.message_num,
            "type": "data",
            "content": {
                "stream": "example_data",
                "channel_num": 0,
                "num_samples": SAMPLES,
                "sample_num": sample_num,
                "sample_rate": RATE,
            },
            "data_size": SAMPLES * 4,
            "timestamp": 0,
        }
        self.pub.send_multipart([b"DATA\x00", json.dumps(header).encode(), bytes(12)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.pub.close(linger=0)
        self.rep.close(linger=0)


@pytest.fixture
def plugin():
    fake = FakePlugin()
    yield fake
    fake.close()


def recording(blocks: int) -> np.ndarray:
    return np.random.default_rng(3).normal(0, 50, (blocks * SAMPLES, CHANNELS)).astype("<f4")


def play(plugin: FakePlugin, data: np.ndarray, lost_block: int) -> None:
    for k in range(data.shape[0] // SAMPLES):
        lose = (2,) if k == lost_block else ()
        plugin.block(k * SAMPLES, data[k * SAMPLES : (k + 1) * SAMPLES], lose)
        if k == 3:
            plugin.ttl_event(k * SAMPLES + 7)  # events are numbered too: not a loss


def test_regroups_channels_into_frames_and_finds_the_lost_message(plugin) -> None:
    data = recording(10)
    with OpenEphysSource(plugin.endpoint, application="pytest") as source:
        beat = plugin.wait_for_client(10)
        assert beat["type"] == "heartbeat" and beat["application"] == "pytest" and beat["uuid"]
        play(plugin, data, lost_block=5)
        plugin.torn(10 * SAMPLES)
        messages, events = [], []
        deadline = time.monotonic() + 10
        while sum(isinstance(m, Frame) for m in messages) < 9 and time.monotonic() < deadline:
            message = source.receive(timeout=0.1)
            if message is not None:
                messages.append(message)
        time.sleep(0.1)
        source.receive(timeout=0.2)
        events = source.drain_events()
    hello = messages[0]
    assert isinstance(hello, Control) and hello.kind == "hello"
    assert hello.meta["channels"] == ["CH1", "CH2", "CH3", "CH4"] and hello.meta["rate"] == RATE
    frames = [m for m in messages if isinstance(m, Frame)]
    kept = [k for k in range(10) if k != 5]
    assert [f.seq for f in frames] == [k * SAMPLES for k in kept]
    for frame, k in zip(frames, kept, strict=True):
        np.testing.assert_array_equal(frame.data, data[k * SAMPLES : (k + 1) * SAMPLES])
        assert frame.t == pytest.approx(frame.seq / RATE) and frame.rate == RATE
    gaps = [e for e in events if isinstance(e, Gap)]
    assert [(g.first_seq, g.n_missing, g.reason) for g in gaps] == [(250, 50, "message_num")]
    assert source.n_missing_messages == 1
    assert [e.code for e in events if isinstance(e, Rejection)] == ["size"]


def test_bridge_republishes_as_streamlab_frames(plugin) -> None:
    data = recording(4)
    with Bridge(plugin.endpoint) as bridge, ZmqSource(bridge.endpoint, pattern="pull") as sink:
        plugin.wait_for_client(10)
        play(plugin, data, lost_block=-1)
        received = []
        deadline = time.monotonic() + 10
        while len(received) < 4 and time.monotonic() < deadline:
            message = sink.receive(timeout=0.1)
            if isinstance(message, Frame):
                received.append(message)
        assert sink.n_rejected == 0
    np.testing.assert_array_equal(np.concatenate([f.data for f in received]), data)


def test_reads_the_older_all_channels_format(plugin) -> None:
    """Plugin 0.x: `message_no`, and every channel of a block in one payload, channel-major."""
    data = recording(2)
    with OpenEphysSource(plugin.endpoint) as source:
        plugin.wait_for_client(10)
        for k in range(2):
            block = data[k * SAMPLES : (k + 1) * SAMPLES]
            header = {
                "message_no": k + 1,
                "type": "data",
                "content": {
                    "n_channels": CHANNELS,
                    "n_samples": SAMPLES,
                    "n_real_samples": SAMPLES,
                    "timestamp": k * SAMPLES,
                    "sample_rate": int(RATE),
                },
                "data_size": block.nbytes,
            }
            payload = np.ascontiguousarray(block.T, dtype="<f4").tobytes()
            plugin.pub.send_multipart([b"DATA\x00", json.dumps(header).encode(), payload])
        frames = []
        deadline = time.monotonic() + 10
        while len(frames) < 2 and time.monotonic() < deadline:
            message = source.receive(timeout=0.1)
            if isinstance(message, Frame):
                frames.append(message)
    np.testing.assert_array_equal(np.concatenate([f.data for f in frames]), data)


@pytest.mark.slow
def test_attach_open_ephys_writes_a_store_with_the_gap(plugin, tmp_path) -> None:
    store = tmp_path / "oe.zarr"
    command = streamlab_command(
        "attach",
        "--open-ephys",
        plugin.endpoint,
        "--learner",
        "sm:n_components=2",
        "--store",
        str(store),
        "--seconds",
        "3",
        "--quiet",
        "--record-input",
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        plugin.wait_for_client(60)
        data = recording(20)
        play(plugin, data, lost_block=10)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    info = describe(str(store))
    assert info["status"] == "complete"
    assert info["learners"]["sm"]["rows"] == 19 * SAMPLES
    assert [(g["first_seq"], g["n_missing"]) for g in info["gaps"]["rows"]] == [(500, 50)]
    recorded = RunStore.open(store).input()
    assert recorded.rows == 19 * SAMPLES

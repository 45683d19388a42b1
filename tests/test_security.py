"""CURVE on real loopback sockets: a listed key receives, an unlisted key or a plain client gets
nothing and the refusal is logged; both directions (rig -> streamlab, streamlab outputs -> a
subscriber) through the CLI; clear errors for missing or wrong key files."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from streamlab.errors import ConfigError
from streamlab.store.run_store import RunStore
from streamlab.stream import Frame, Publisher, ZmqSource
from streamlab.stream.security import CurveClient, CurveServer, new_keys
from tests.conftest import free_endpoint, run_cli, streamlab_command


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Key pairs for a rig (server), a lab client and a stranger; only the client is listed."""
    allowed = tmp_path / "allowed"
    made = {}
    for name in ("rig", "client", "stranger"):
        public, secret = new_keys(name, tmp_path / "keys")
        made[name], made[f"{name}_public"] = secret, public
    allowed.mkdir()
    (allowed / "client.key").write_bytes(made["client_public"].read_bytes())
    made["allowed"] = allowed
    return made


def receive_frames(source: ZmqSource, seconds: float) -> list[Frame]:
    frames, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = source.receive(timeout=0.05)
        if isinstance(message, Frame):
            frames.append(message)
    return frames


def test_only_listed_keys_receive_and_refusals_are_logged(keys, caplog) -> None:
    server = CurveServer(keys["rig"], keys["allowed"])
    caplog.set_level(logging.WARNING, logger="streamlab.security")
    with Publisher(free_endpoint(), curve=server) as rig:
        clients = {
            "client": ZmqSource(
                rig.endpoint,
                curve=CurveClient(keys["client"], keys["rig_public"]),
                watch_connection=True,
            ),
            "stranger": ZmqSource(
                rig.endpoint, curve=CurveClient(keys["stranger"], keys["rig_public"])
            ),
            "plain": ZmqSource(rig.endpoint),
        }
        assert clients["client"].wait_connected(30)
        time.sleep(0.5)  # the subscription reaches the rig; the others are refused meanwhile
        data = np.arange(8, dtype=np.float32).reshape(1, 8)
        for seq in range(20):
            rig.send(Frame("rig/spikes", data, seq, seq / 100))
        received = {name: receive_frames(source, 0.5) for name, source in clients.items()}
        for source in clients.values():
            source.close()
        assert len(received["client"]) == 20
        np.testing.assert_array_equal(received["client"][3].data, data)
        assert received["stranger"] == [] and received["plain"] == []
        assert rig.allow is not None and rig.allow.refused >= 1
    refused = [r.getMessage() for r in caplog.records if "refused a client" in r.getMessage()]
    assert refused and keys["allowed"].name in refused[0]


def test_clear_errors_for_bad_key_files(keys, tmp_path) -> None:
    with pytest.raises(ConfigError, match="only a public key"):
        Publisher(free_endpoint(), curve=CurveServer(keys["rig_public"], keys["allowed"]))
    with pytest.raises(ConfigError, match="does not exist"):
        Publisher(free_endpoint(), curve=CurveServer(keys["rig"], tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no public keys"):
        Publisher(free_endpoint(), curve=CurveServer(keys["rig"], tmp_path / "empty"))
    with pytest.raises(ConfigError, match="streamlab keys new"):
        ZmqSource(free_endpoint(), curve=CurveClient(tmp_path / "missing", keys["rig_public"]))
    with pytest.raises(ConfigError, match="exists already"):
        new_keys("rig", keys["rig"].parent)


def test_cli_rig_to_attach_to_subscriber_all_encrypted(keys, tmp_path) -> None:
    """`streamlab keys new`, a CURVE rig (`sim --push`), `attach` as a CURVE client of the rig
    and a CURVE server for its outputs: the listed subscriber gets the outputs, a stranger
    nothing, and every sample the rig sent was learned from."""
    made = run_cli("keys", "new", "lab", "--dir", str(tmp_path / "cli-keys"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "cli-keys" / "lab.key_secret").is_file()
    data, outputs = free_endpoint(), free_endpoint()
    store = tmp_path / "run.zarr"
    attach = subprocess.Popen(
        streamlab_command(
            "attach", data, "--pull", "--learner", "sm:n_components=2", "--store", str(store),
            "--until-eos", "--quiet", "--device", "cpu",
            "--curve-secret", str(keys["client"]), "--curve-server-key", str(keys["rig_public"]),
            "--publish", outputs, "--curve-allow", str(keys["allowed"]),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    rig = subprocess.Popen(
        streamlab_command(
            "sim", "--publish", data, "--push", "--fast", "--channels", "8", "--rate", "200",
            "--seconds", "8", "--curve-secret", str(keys["rig"]),
            "--curve-allow", str(keys["allowed"]),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        listed = ZmqSource(outputs, curve=CurveClient(keys["client"], keys["client_public"]))
        stranger = ZmqSource(outputs, curve=CurveClient(keys["stranger"], keys["client_public"]))
        frames, stolen = [], []
        deadline = time.monotonic() + 90
        while attach.poll() is None and time.monotonic() < deadline:
            frames += receive_frames(listed, 0.2)
            stolen += receive_frames(stranger, 0.05)
        listed.close()
        stranger.close()
        _, rig_err = rig.communicate(timeout=60)
        _, attach_err = attach.communicate(timeout=60)
    finally:
        rig.kill()
        attach.kill()
    assert rig.returncode == 0, rig_err
    assert attach.returncode == 0, attach_err
    assert len(frames) > 100 and frames[0].stream == "streamlab/sm"
    assert stolen == []
    assert RunStore.open(store).learner("sm").rows == 1600

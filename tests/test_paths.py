"""Store paths from flow parameters stay inside the configured root."""

from __future__ import annotations

import os

import pytest

from streamlab.errors import ConfigError
from streamlab.paths import STORE_ROOT_ENV, confined_store


def test_paths_inside_the_root_resolve_there(tmp_path) -> None:
    assert confined_store("runs/a.zarr", str(tmp_path)) == str(tmp_path / "runs" / "a.zarr")
    assert confined_store(str(tmp_path / "b.zarr"), str(tmp_path)) == str(tmp_path / "b.zarr")


@pytest.mark.parametrize("escape", ["../x.zarr", "runs/../../x.zarr", "/etc/x.zarr", "s3://b/x"])
def test_paths_escaping_the_root_are_refused(tmp_path, escape) -> None:
    with pytest.raises(ConfigError, match=STORE_ROOT_ENV):
        confined_store(escape, str(tmp_path / "root"))


def test_a_symlink_out_of_the_root_is_refused(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="outside the store root"):
        confined_store("link/x.zarr", str(root))


def test_without_a_root_paths_are_unchanged(monkeypatch) -> None:
    monkeypatch.delenv(STORE_ROOT_ENV, raising=False)
    assert confined_store("../anything.zarr") == "../anything.zarr"
    monkeypatch.setenv(STORE_ROOT_ENV, os.sep + "data")
    with pytest.raises(ConfigError):
        confined_store("../anything.zarr")


def test_the_replay_flow_refuses_a_store_outside_the_root(tmp_path, monkeypatch) -> None:
    """The flow's task checks the parameter before touching the session or the store."""
    from streamlab.flows.replay import replay_one

    monkeypatch.setenv(STORE_ROOT_ENV, str(tmp_path / "root"))
    with pytest.raises(ConfigError, match="outside the store root"):
        replay_one.fn("missing.npz", "../../elsewhere.zarr", ["sm"])

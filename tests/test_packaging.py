"""The distribution ships flows/ and adapters/ as streamlab.flows and streamlab.adapters, puts no
generic top-level names into site-packages, and installs the `streamlab` command."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from importlib.metadata import distribution

from tests.conftest import REPO, run_cli


def test_flows_and_adapters_are_subpackages() -> None:
    assert importlib.import_module("streamlab.flows.replay").replay_flow.name == "streamlab-replay"
    importlib.import_module("streamlab.adapters")


def test_wheel_has_no_generic_top_level_names(tmp_path) -> None:
    """Build the real wheel and look inside: only `streamlab` and its metadata at the top."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            "-q",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("streamlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "streamlab",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert "streamlab/flows/replay.py" in names and "streamlab/adapters/__init__.py" in names
    assert "[console_scripts]\nstreamlab = streamlab.cli:main" in distribution(
        "streamlab"
    ).read_text("entry_points.txt")


def test_cli_errors_say_what_to_do(tmp_path) -> None:
    result = run_cli("attach", "tcp://127.0.0.1:1", "--store", str(tmp_path / "x.zarr"))
    assert result.returncode == 1 and "--learner" in result.stderr
    result = run_cli(
        "attach", "tcp://127.0.0.1:1", "--learner", "nope", "--store", str(tmp_path / "x.zarr")
    )
    assert (
        result.returncode == 1
        and "unknown learner 'nope'" in result.stderr
        and "known: akd, bio_ofc" in result.stderr
    )
    result = run_cli("inspect", str(tmp_path / "missing.zarr"))
    assert result.returncode == 1 and "no streamlab store" in result.stderr
    result = run_cli(
        "attach",
        "not-an-endpoint",
        "--learner",
        "sm",
        "--store",
        str(tmp_path / "y.zarr"),
        "--seconds",
        "1",
    )
    assert result.returncode == 1 and "endpoints look like" in result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = next(
        line for line in ci.splitlines() if line.startswith("python3 -m venv") and "pytest" in line
    )
    assert command in readme


def test_deployments_name_importable_flows() -> None:
    import yaml

    config = yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module("streamlab." + path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, name)), deployment["entrypoint"]

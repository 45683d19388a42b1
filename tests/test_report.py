"""`streamlab report` on a real short run: a replay through a latent learner, a switching GLM
(posterior, log-likelihood) and a decoder with its target recorded, calibrated for 10 s. The page
must exist, hold
every PNG inline, the PNGs must be real pictures (not blank), and the page must render in a
browser (screenshot kept as a CI artifact)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from streamlab.sessions import Session, save_session
from streamlab.sim.lds import LatentPoissonPopulation
from tests.browser import ARTIFACTS, browser, full_page_screenshot  # noqa: F401
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

LEARNERS = ("sm:n_components=3", "sglm:n_states=2,burn_in=100", "akd:y=neuron0+neuron1")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory):
    """A run store made by `streamlab replay` (input recorded), and its report."""
    tmp = tmp_path_factory.mktemp("report")
    population = LatentPoissonPopulation(n_neurons=12, rate=100.0, seed=4, firing_rate=30.0)
    data, _ = population.sample(1500)
    save_session(tmp / "session.npz", Session(data, 100.0, meta=population.hello_meta()))
    store = tmp / "run.zarr"
    replay = run_cli(
        "replay", str(tmp / "session.npz"), "--store", str(store), "--record-input", "--quiet",
        "--device", "cpu", "--checkpoint-every", "500", "--calibrate", "10",
        *(a for spec in LEARNERS for a in ("--learner", spec)),
        timeout=300,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    report = run_cli("report", str(store), "--out", str(tmp / "out"), timeout=300)
    assert report.returncode == 0, report.stderr
    assert str(tmp / "out" / "report.html") in report.stdout
    return tmp / "out"


def test_report_has_every_picture_on_disk_and_inline(report_dir) -> None:
    page = (report_dir / "report.html").read_text()
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    expected = {
        "sm-outputs.png",
        "sglm-outputs.png",
        "sglm-states.png",
        "sglm-log_likelihood.png",
        "akd-outputs.png",
        "akd-decoding-error.png",
        "latency.png",
        "input.png",
    }
    assert expected <= set(pngs), pngs
    inline = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(inline) == len(pngs)  # self-contained: every picture is in the page itself
    for png in [(report_dir / name).read_bytes() for name in pngs] + [
        base64.b64decode(data) for data in inline
    ]:
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.width >= 600 and image.height >= 200
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert pixels.std() > 5  # not a blank picture
    for words in ("Latency", "Gaps and rejects", "Configuration and versions", "torch", "zarr"):
        assert words in page
    assert "Decoding RMSE over the decoded part" in page and "running-mean baseline" in page
    # calibrated: the decoder's score after calibration beside the baselines and its control
    for words in ("Decoding after calibration", "baseline: ridge", "akd (shift control)"):
        assert words in page
    assert "sm:n_components=3" in page  # the run's config


def test_report_renders_in_a_browser(report_dir, browser) -> None:  # noqa: F811
    browser.get((report_dir / "report.html").as_uri())
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    )
    assert len(loaded) >= 8 and all(loaded)
    assert browser.title.startswith("streamlab report")
    pixels = full_page_screenshot(browser, ARTIFACTS / "report.png")
    assert pixels.shape[0] > 2000 and pixels.std() > 10


def test_a_panel_says_when_it_leaves_lines_out() -> None:
    from streamlab.report import MAX_LINES, _shown

    assert _shown(MAX_LINES) == ""
    assert _shown(MAX_LINES + 2) == f" (the first {MAX_LINES} of {MAX_LINES + 2} shown)"

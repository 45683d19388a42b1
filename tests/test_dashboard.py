"""`streamlab dashboard` as a person uses it: a simulated rig, a pipeline publishing its outputs
and the dashboard, each its own process on loopback, and the page opened in headless Chromium
(it must draw, and keep drawing as data comes). Beside it, the parts without a browser: the
feed's bounded queues, the health frames the output sink publishes and their parsing, the page
holding no more than its window, and following a store as it is written."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from streamlab.dashboard.feed import LiveFeed, Rows, StoreFeed, learner_role, parse_health
from streamlab.dashboard.page import DashboardPage
from streamlab.learners import SimilarityMatching
from streamlab.sinks import HEALTH_FIELDS, HEALTH_LATENCY_EDGES_US, StreamInfo, ZmqOutputSink
from streamlab.store.run_store import RunStore
from streamlab.stream.protocol import Frame
from streamlab.stream.transport import Gap, Rejection
from tests.browser import ARTIFACTS, CANVASES_JS, browser, full_page_screenshot  # noqa: F401
from tests.conftest import free_endpoint, run_cli, streamlab_command


def free_port() -> int:
    return int(free_endpoint().rsplit(":", 1)[1])


# -- the feed, without a browser ----------------------------------------------------------------
def test_rows_keep_only_the_newest_window() -> None:
    rows = Rows(capacity=1000)
    for block in range(10):
        t = np.arange(block * 300, (block + 1) * 300, dtype=float)
        rows.append(t, np.column_stack([t, -t]))
        assert len(rows) <= 1000
    t, values = rows.drain()
    np.testing.assert_array_equal(t, np.arange(2000, 3000))
    np.testing.assert_array_equal(values[:, 1], -np.arange(2000, 3000))
    assert rows.dropped == 2000 and len(rows) == 0 and rows.drain() is None
    rows.append(np.arange(5000.0), np.zeros((5000, 2)))  # one block larger than the window
    assert len(rows.drain()[0]) == 1000


@pytest.mark.parametrize(
    ("cls", "k", "y", "role"),
    [
        ("SwitchingGLM", 3, [], "posterior"),
        ("BioOFC", 1, ["cost"], "control"),
        ("AdaptiveKalmanDecoder", 2, ["vx", "vy"], "decoder"),
        ("ForceReadout", 2, ["x"], "latent"),  # sizes disagree: nothing to set beside it
        ("SimilarityMatching", 4, [], "latent"),
    ],
)
def test_learners_are_drawn_by_what_their_outputs_are(cls, k, y, role) -> None:
    assert learner_role(cls, k, y) == role


def test_health_rows_parse_by_their_hello_and_refuse_a_wrong_length() -> None:
    fields = list(HEALTH_FIELDS)
    edges = HEALTH_LATENCY_EDGES_US.tolist()
    row = np.arange(len(fields) + len(edges) - 1, dtype=float)
    health = parse_health(row[None, :], fields, edges)
    assert health["samples"] == 0.0 and health["elapsed_s"] == fields.index("elapsed_s")
    assert health["behind_s"] == fields.index("behind_s")
    np.testing.assert_array_equal(health.hist, row[len(fields) :])
    assert np.isnan(health["no such field"])
    with pytest.raises(ValueError, match="latency bins"):
        parse_health(row[:-1], fields, edges)


def test_the_output_sink_publishes_health_and_input_that_the_live_feed_reads() -> None:
    """The sink's side streams, end to end over a real socket: health counts what the sink saw
    (samples, gaps, rejects, latency), the input arrives decimated (bin means), learners' outputs
    keep their seq's time, and a listener that connects late learns each stream from the
    hellos repeated every second."""
    endpoint = free_endpoint()
    sink = ZmqOutputSink(
        endpoint, targets={"sm": ["c1"]}, health_interval=0.05, input_interval=0.05
    )
    feed = LiveFeed(endpoint, window=500)
    try:
        time.sleep(0.3)  # the subscription reaches the publisher
        stream = StreamInfo(
            "rig/spikes", 4, "<u2", "spikes", 100.0, {"channels": ["c0", "c1", "c2", "c3"]}
        )
        sink.open({"sm": SimilarityMatching(n_components=2, device="cpu", seed=0)}, stream)
        data = np.array([[1, 2, 3, 4]], dtype="<u2")
        sink.on_events([Gap("rig/spikes", 5, 3), Rejection("rig/spikes", "json", "bad")])
        for seq in range(60):
            frame = Frame(
                "rig/spikes", data, seq, seq / 100.0, "spikes", 100.0, time.perf_counter_ns()
            )
            latency = np.array([[2000 + 10 * seq]], dtype=np.int64)
            sink.on_frame(frame, {"sm": torch.full((1, 2), float(seq))}, latency)
            time.sleep(0.005)
        time.sleep(0.1)
        sink.tick()  # the last interval's health, now due
        updates = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.1)
            updates.append(feed.poll())
            if any(h["samples"] == 60 and h["last_seq"] == 59 for h in updates[-1].health):
                break
    finally:
        sink.close("complete")
        feed.close()
    health = [h for u in updates for h in u.health]
    assert health, "no health frame arrived"
    last = health[-1]
    assert last["samples"] == 60 and last["gaps"] == 1 and last["missing"] == 3
    assert last["rejects"] == 1 and last["last_seq"] == 59
    assert last["behind_s"] >= 0.0  # metrics.LagMeter's figure (its maths: test_pipeline)
    assert sum(h.hist.sum() for h in health) == 60  # every sample's latency in one histogram
    assert 1.0 <= last["latency_p50_us"] <= 3.0 or np.isnan(last["latency_p50_us"])
    info = updates[-1].info["sm"]
    assert (info.cls, info.n_components, info.y, info.y_index) == (
        "SimilarityMatching",
        2,
        ["c1"],
        [1],
    )
    outputs = [u.learners["sm"] for u in updates if "sm" in u.learners]
    t = np.concatenate([o[0] for o in outputs])
    values = np.concatenate([o[1] for o in outputs])
    np.testing.assert_allclose(values[:, 0], np.round(t * 100))  # output seq <-> its time
    inputs = [u.input for u in updates if u.input is not None]
    assert inputs and all(np.allclose(x[1], [1, 2, 3, 4]) for x in inputs)  # bin means


def test_the_page_holds_no_more_than_its_window() -> None:
    """However long a page stays open, its sources stay within the rollover."""

    class Endless:
        def __init__(self) -> None:
            self.t = 0.0

        def poll(self):
            from streamlab.dashboard.feed import Health, LearnerInfo, Update

            t = self.t + np.arange(500) / 1000
            self.t = float(t[-1]) + 0.001
            edges = np.logspace(0, 6, 49)
            return Update(
                learners={"sglm": (t, np.full((500, 3), 1 / 3)), "sm": (t, np.ones((500, 2)))},
                input=(t[::50], np.ones((10, 300))),
                health=[
                    Health({"samples": self.t * 1000, "elapsed_s": self.t}, np.ones(48), edges)
                ],
                info={
                    "sglm": LearnerInfo("sglm", "SwitchingGLM", 3),
                    "sm": LearnerInfo("sm", "SimilarityMatching", 2),
                },
                status="endless",
            )

        def close(self) -> None:
            pass

    page = DashboardPage(Endless(), "test", window=1500, heat_bins=100, max_channels=64)
    for _ in range(40):
        page.update()
    sources = {name: page._learner_src[name] for name in ("sm", "sglm")}
    assert all(len(source.data["t"]) == 1500 for source in sources.values())
    assert len(page._health_src.data["elapsed"]) == 40
    image = page._heat_src.data["image"][0]
    assert image.shape == (60, 100)  # 300 channels pooled by 5 into 60 rows, 100 bins kept
    assert "endless" in page.header.text


def test_store_feed_reads_only_new_committed_rows(tmp_path) -> None:
    store = RunStore.create(
        tmp_path / "run.zarr", config={"learners": ["sm:n_components=2"]}, source={}
    )
    store.set_stream(
        {
            "name": "rig",
            "n_channels": 3,
            "dtype": "<f4",
            "kind": "calcium",
            "rate": 10.0,
            "meta": {},
        }
    )
    table = store.learner("sm", 2, "f4", {"class": "SimilarityMatching"})
    store.input(3, "<f4")
    feed = StoreFeed(str(tmp_path / "run.zarr"), window=100, interval=0.0)

    def append(lo: int, hi: int) -> None:
        seq = np.arange(lo, hi, dtype=np.uint64)
        t = seq / 10.0
        table.append(
            output=np.column_stack([t, t]).astype("f4"),
            seq=seq,
            t=t,
            latency_us=np.full(hi - lo, 50.0, dtype="f4"),
        )
        store.append_input(np.ones((hi - lo, 3), dtype="f4"), seq, t)

    append(0, 250)
    first = feed.poll()
    t, _ = first.learners["sm"]
    np.testing.assert_allclose(t, np.arange(150, 250) / 10)  # at most the window, newest first
    assert first.info["sm"].cls == "SimilarityMatching" and first.health[0]["samples"] == 250
    assert first.health[0]["latency_p50_us"] == pytest.approx(50.0)
    assert first.input is not None and np.allclose(first.input[1], 1.0)
    append(250, 260)
    store.append_events("gaps", {
        "stream": np.array(["rig"], dtype=object), "first_seq": np.array([260], dtype=np.uint64),
        "n_missing": np.array([7], dtype=np.uint64), "reason": np.array(["seq"], dtype=object),
        "wall_time": np.array([0.0]),
    })  # fmt: skip
    second = feed.poll()
    np.testing.assert_allclose(second.learners["sm"][0], np.arange(250, 260) / 10)
    assert second.health[0]["gaps"] == 1 and second.health[0]["missing"] == 7
    assert "running" in second.status
    assert "sm" not in feed.poll().learners  # nothing new, nothing sent
    # a finished store keeps its last latency figures; its rate is no rate, not a stall of 0
    store.set_status("complete")
    finished = feed.poll().health[0]
    assert finished["latency_p50_us"] == pytest.approx(50.0)
    assert np.isnan(finished["samples_per_s"])


def test_dashboard_cli_says_what_it_needs(tmp_path) -> None:
    result = run_cli("dashboard")
    assert result.returncode == 1 and "--listen ENDPOINT" in result.stderr
    result = run_cli("dashboard", "--listen", "tcp://127.0.0.1:1", "--store", "x.zarr")
    assert result.returncode == 1 and "exactly one of" in result.stderr
    result = run_cli("report", str(tmp_path / "missing.zarr"))
    assert result.returncode == 1 and "no streamlab store" in result.stderr


@pytest.mark.parametrize("ci", ["true", ""])
def test_browser_tests_skip_without_chromium_but_fail_under_ci(monkeypatch, tmp_path, ci) -> None:
    import tests.browser

    monkeypatch.setattr(tests.browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="apt-get install chromium chromium-driver"):
        tests.browser.require_browser()


# -- the real thing, in a browser --------------------------------------------------------------
# a live rig's hello may go out before `attach` has connected, so y is named by channel index
LEARNERS = ("sm:n_components=3", "sglm:n_states=2,burn_in=100", "akd:y=0+1")


@pytest.mark.slow
def test_dashboard_in_a_browser_draws_and_keeps_updating(tmp_path, browser) -> None:  # noqa: F811
    rig_endpoint, out_endpoint, port = free_endpoint(), free_endpoint(), free_port()
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("sim", "attach", "dashboard")}  # noqa: SIM115
    commands = {
        "dashboard": ("dashboard", "--listen", out_endpoint, "--port", str(port)),
        "attach": (
            "attach", rig_endpoint, *(a for spec in LEARNERS for a in ("--learner", spec)),
            "--store", str(tmp_path / "run.zarr"), "--publish", out_endpoint,
            "--until-eos", "--quiet", "--device", "cpu", "--checkpoint-every", "500",
        ),
        "sim": (
            "sim", "--publish", rig_endpoint, "--channels", "16", "--rate", "50",
            "--seconds", "240", "--startup-delay", "3",
        ),
    }  # fmt: skip
    procs = {
        name: subprocess.Popen(
            streamlab_command(*command), stdout=logs[name], stderr=subprocess.STDOUT
        )
        for name, command in commands.items()
    }
    try:
        from selenium.webdriver.support.ui import WebDriverWait

        url = f"http://127.0.0.1:{port}/"
        _wait_for_http(url, procs["dashboard"], tmp_path / "dashboard.log")
        browser.get(url)
        wait = WebDriverWait(browser, 180, poll_frequency=0.5)

        def source(name: str) -> str:
            return f"Bokeh.documents[0].get_model_by_name('{name}')"

        def length_and_last(name: str) -> list[float] | None:
            for proc_name in ("attach", "dashboard"):
                if procs[proc_name].poll() is not None:
                    log = (tmp_path / f"{proc_name}.log").read_text()
                    pytest.fail(f"{proc_name} exited early: {log}")
            return browser.execute_script(
                f"const s = Bokeh.documents.length ? {source(name)} : null;"
                "if (!s || !s.data.t || !s.data.t.length) return null;"
                "return [s.data.t.length, s.data.t[s.data.t.length - 1]];"
            )

        for name in ("source-sm", "source-sglm", "source-akd", "true-akd"):
            wait.until(lambda _d, name=name: length_and_last(name) is not None, f"no {name}")
        wait.until(
            lambda _d: browser.execute_script(
                f"return {source('health-source')}.data.elapsed.length >= 5"
            )
        )
        first = length_and_last("source-sm")
        wait.until(lambda _d: length_and_last("source-sm")[1] > first[1] + 1.0, "no progress")
        second = length_and_last("source-sm")
        assert second[1] > first[1] and second[0] >= first[0]
        health = browser.execute_script(f"return {source('health-source')}.data.rate")
        assert max(health) > 0
        assert browser.execute_script(f"return {source('plot-sglm')}.renderers.length") == 2
        # the figures are drawn: every plot's canvas holds more than one colour
        wait.until(lambda _d: sum(c[2] > 3 for c in browser.execute_script(CANVASES_JS)) >= 7)
        pixels = full_page_screenshot(browser, ARTIFACTS / "dashboard.png")
        assert pixels.std() > 10 and pixels.shape[0] > 1200
        header = browser.execute_script(f"return {source('header')}.text")
        assert "receiving" in header and out_endpoint in header
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs.values():
            log.close()


def _wait_for_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"the dashboard did not answer at {url}: {log.read_text()}")

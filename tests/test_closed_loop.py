"""The control loop over real sockets: a simulated plant binds its observation stream, a
streamlab run attaches to it with BioOFC (cost channel as y) and publishes controls back, and
the plant acts on them. The loop over ZeroMQ must be the same computation as the in-process
loop, and the learner spec's `y=` must pick the channels it names."""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError
from streamlab.learners import parse_spec
from streamlab.learners.control import BioOFC
from streamlab.pipeline import split_channels
from streamlab.report import TimeAxis, build_sections
from streamlab.runner import AttachOptions, attach
from streamlab.sim.closed_loop import ControlTimeoutError, plant_channels, serve_plant
from streamlab.sim.plant import double_integrator, learner_episodes
from streamlab.sinks import StreamInfo
from streamlab.store.run_store import RunStore
from streamlab.stream import Publisher
from tests.conftest import free_endpoint, run_cli, streamlab_command

EPISODES = 120


def test_bio_ofc_over_zeromq_equals_the_in_process_loop(tmp_path) -> None:
    data, control = free_endpoint(), free_endpoint()
    options = AttachOptions(
        store=str(tmp_path / "run.zarr"),
        learners=["bio_ofc:delay=2,y=cost"],
        pattern="pull",
        publish=control,
        device="cpu",
        seed=4,
        checkpoint_every=500,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            attach(data, options, seconds=120)
        except BaseException as exc:  # reported by the test
            failure.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    costs = serve_plant(double_integrator(2, seed=9), data, control, EPISODES, timeout=30)
    runner.join(60)
    assert not failure, failure
    assert not runner.is_alive()

    reference = BioOFC(delay=2, device="cpu", seed=4)
    expected = learner_episodes(double_integrator(2, seed=9), reference, EPISODES)[:, 0]
    np.testing.assert_allclose(costs, expected, rtol=1e-6)

    store = RunStore.open(options.store)
    table = store.learner("bio_ofc")
    assert table.rows == EPISODES * 11
    np.testing.assert_array_equal(table.read("seq"), np.arange(EPISODES * 11))
    assert store.status == "complete"
    assert store.attrs["stream"]["meta"]["channels"] == ["y0", "y1", "cost"]
    # the state estimate behind each control is stored beside it
    estimate = table.read("estimate")
    assert estimate.shape == (EPISODES * 11, 2) and np.isfinite(estimate).all()
    np.testing.assert_allclose(estimate[-1], reference.estimate[0].numpy(), rtol=1e-5, atol=1e-6)
    import xarray

    dataset = xarray.open_zarr(options.store, group="learners/bio_ofc", consolidated=False)
    assert dataset["estimate"].dims == ("time", "estimate_feature")


def test_plant_without_controller_times_out_with_a_clear_error() -> None:
    plant = double_integrator(1)
    with pytest.raises(ControlTimeoutError, match="could not connect to the control stream"):
        serve_plant(plant, free_endpoint(), free_endpoint(), 1, timeout=0.5)
    with (
        Publisher(free_endpoint()) as controller,  # controls would come, but no one takes data
        pytest.raises(ControlTimeoutError, match="no controller took sample 0"),
    ):
        serve_plant(plant, free_endpoint(), controller.endpoint, 1, timeout=0.5)


def test_y_spec_round_trips_and_is_refused_where_it_means_nothing() -> None:
    spec = parse_spec("akd:forgetting=0.99,y=vx+vy")
    assert spec.y == ("vx", "vy")
    assert parse_spec(str(spec)) == spec
    with pytest.raises(ConfigError, match="takes no y"):
        parse_spec("sm:y=cost")


def test_split_channels_by_name_and_index_with_clear_errors() -> None:
    plant = double_integrator(1)
    stream = StreamInfo("p", 3, "<f8", "plant", None, {"channels": plant_channels(plant)})
    x, y = split_channels(stream, ["cost"], "bio_ofc")
    assert x.tolist() == [0, 1] and y.tolist() == [2]
    x, y = split_channels(stream, ["0"], "akd")
    assert x.tolist() == [1, 2] and y.tolist() == [0]
    with pytest.raises(ConfigError, match=r"does not have .*'y0', 'y1', 'cost'"):
        split_channels(stream, ["speed"], "akd")
    with pytest.raises(ConfigError, match="leave at least one"):
        split_channels(stream, ["y0", "y1", "cost"], "akd")


def test_pipeline_gives_the_learner_x_and_y_as_named(tmp_path) -> None:
    """The adaptive decoder fed over the pipeline with y=vx+vy learns the same as stepping it
    directly on (counts, velocity)."""
    from streamlab.pipeline import Pipeline
    from streamlab.sim.plant import CosineTunedPopulation
    from streamlab.stream.protocol import Control, Frame

    counts, velocity = CosineTunedPopulation(n_neurons=6, seed=3).sample(40)
    rows = np.concatenate([velocity[:, 0], counts[:, 0]], axis=1).astype(np.float32)

    class Scripted:
        def __init__(self) -> None:
            self.events: list = []
            self.messages = [Control("s", "hello", 0, 0.0, {"channels": ["vx", "vy"]})]
            self.messages += [Frame("s", rows[i : i + 1], i, float(i)) for i in range(len(rows))]
            self.messages.append(Control("s", "eos", len(rows), 0.0))

        def receive(self, timeout: float = 0.1):
            return self.messages.pop(0) if self.messages else None

        def drain_events(self) -> list:
            return []

    learners = {"akd": parse_spec("akd").build(device="cpu")}
    Pipeline(Scripted(), learners, targets={"akd": ["vx", "vy"]}).run()
    direct = parse_spec("akd").build(device="cpu")
    for row in torch.from_numpy(rows):
        direct.step(row[2:], row[:2])
    torch.testing.assert_close(learners["akd"].observation_model[0], direct.observation_model[0])


def test_plant_and_attach_commands_close_the_loop(tmp_path) -> None:
    """The two commands a user runs: `streamlab plant` and `streamlab attach` with BioOFC."""
    data, control = free_endpoint(), free_endpoint()
    store = tmp_path / "loop.zarr"
    attach_run = subprocess.Popen(
        streamlab_command(
            "attach",
            data,
            "--pull",
            "--learner",
            "bio_ofc:delay=1,y=cost",
            "--publish",
            control,
            "--store",
            str(store),
            "--until-eos",
            "--record-input",
            "--quiet",
            "--device",
            "cpu",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        plant = run_cli(
            "plant", "--publish", data, "--control", control, "--episodes", "30", timeout=120
        )
        _, attach_err = attach_run.communicate(timeout=60)
    finally:
        attach_run.kill()
    assert plant.returncode == 0, plant.stderr
    assert "30 episodes" in plant.stderr and "LQG optimum 5.60" in plant.stderr
    assert attach_run.returncode == 0, attach_err
    assert RunStore.open(store).learner("bio_ofc").rows == 30 * 11
    # the report draws the recorded cost's curve, on an axis of plant steps (not seconds)
    assert TimeAxis.of(RunStore.open(store).attrs["stream"]).unit == "steps"
    section = next(s for s in build_sections(str(store)) if "bio_ofc" in s.title)
    assert "bio_ofc-cost.png" in [name for name, _ in section.images]

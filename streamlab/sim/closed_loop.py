"""A simulated plant in closed loop over ZeroMQ, as a rig with a controller in the loop runs.

The plant binds its observation stream (as a rig does) and subscribes to the control a
streamlab run publishes back (`attach --publish`). Each sample it sends is the newest delayed
observation followed by the cost of the last action (0 at an episode start); it then waits for
the control answering that sample's `seq` before it moves on, so plant and controller advance
in lockstep at whatever speed the loop runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from streamlab.errors import ConfigError, StreamlabError
from streamlab.sim.plant import LinearPlant
from streamlab.stream import Publisher, ZmqSource
from streamlab.stream.protocol import Control, Frame

DEFAULT_PLANT_STREAM = "plant/observation"


class ControlTimeoutError(StreamlabError, TimeoutError):
    """No control came back for a sample within the timeout."""


def plant_channels(plant: LinearPlant) -> list[str]:
    """Channel names of the plant's stream: the observations y0, y1, ..., then `cost`."""
    return [f"y{i}" for i in range(plant.n_observations)] + ["cost"]


def serve_plant(
    plant: LinearPlant,
    endpoint: str,
    control_endpoint: str,
    episodes: int,
    *,
    control_topic: str = "streamlab/bio_ofc",
    stream: str = DEFAULT_PLANT_STREAM,
    timeout: float = 10.0,
    startup_delay: float = 0.2,
    stop: threading.Event | None = None,
    on_bound: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Run `episodes` episodes of `plant` (batch 1) against the controller publishing on
    `control_endpoint` under `control_topic`; returns each episode's cost.

    Observations go out on `endpoint` (bound, PUSH: a closed loop must lose nothing) as stream
    `stream`, whose hello names the channels (`plant_channels`). Raises `ControlTimeoutError`
    when no controller takes a sample, or its control does not come back, within `timeout`
    seconds."""
    if plant.batch != 1:
        raise ConfigError(f"a served plant runs one episode at a time; got batch={plant.batch}")
    costs = np.zeros(episodes)
    n_controls = plant.n_controls
    with (
        ZmqSource(
            control_endpoint, pattern="sub", topic=control_topic, watch_connection=True
        ) as controls,
        Publisher(endpoint, pattern="push", send_timeout=timeout) as publisher,
    ):
        if on_bound is not None:
            on_bound(publisher.endpoint)
        if not controls.wait_connected(timeout):
            raise ControlTimeoutError(
                f"could not connect to the control stream on {control_endpoint} within "
                f"{timeout} s; start the streamlab run with --publish {control_endpoint}"
            )
        time.sleep(startup_delay)  # the subscription reaches the controller
        meta = {"channels": plant_channels(plant), "delay": plant.delay, "horizon": plant.horizon}
        seq = 0

        def send(message: Frame | Control) -> None:
            try:
                publisher.send(message)
            except TimeoutError as exc:
                raise ControlTimeoutError(
                    f"no controller took sample {seq} within {timeout} s; attach a streamlab "
                    f"run to {publisher.endpoint} with --pattern pull"
                ) from exc

        send(Control(stream, "hello", 0, 0.0, meta))

        def exchange(observation: np.ndarray, cost: float) -> np.ndarray:
            nonlocal seq
            row = np.append(observation.reshape(-1), cost)[None, :]
            send(Frame(stream, row, seq, float(seq), "plant", None))
            control = _await_control(controls, seq, n_controls, timeout, stop)
            seq += 1
            return control

        for episode in range(episodes):
            if stop is not None and stop.is_set():
                return costs[:episode]
            u = exchange(plant.reset(), 0.0)
            total = plant.initial_cost
            for _ in range(plant.horizon - 1):
                observation, cost = plant.step(u[None, :])
                total += float(cost[0])
                u = exchange(observation, float(cost[0]))
            costs[episode] = total
        send(Control(stream, "eos", seq, float(seq)))
    return costs


def _await_control(
    controls: ZmqSource,
    seq: int,
    n_controls: int,
    timeout: float,
    stop: threading.Event | None,
) -> np.ndarray:
    """The control answering sample `seq` (older answers are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            break
        message = controls.receive(timeout=0.05)
        if not isinstance(message, Frame) or message.seq + message.n_samples <= seq:
            continue
        if message.seq != seq or message.n_channels != n_controls:
            raise ConfigError(
                f"control for sample {seq} expected ({n_controls} channels), got a frame at seq "
                f"{message.seq} with {message.n_channels}; is the controller's output for "
                "this plant's stream, with n_components equal to the plant's control size?"
            )
        return message.data[0].astype(np.float64)
    raise ControlTimeoutError(
        f"no control for sample {seq} within {timeout} s on the control stream; is a streamlab "
        "run attached to the plant with --publish on the control endpoint, and is its learner "
        "the one named in the control topic?"
    )

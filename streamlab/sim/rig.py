"""The simulated rig: binds a socket and publishes a `LatentPoissonPopulation` in real time (or
as fast as the receiver takes it), exactly as a live rig would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np

from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.stream import Publisher, play
from streamlab.stream.security import CurveServer

DEFAULT_STREAM = "sim/spikes"


def run_rig(
    endpoint: str,
    population: LatentPoissonPopulation,
    *,
    seconds: float,
    stream: str = DEFAULT_STREAM,
    pattern: Literal["pub", "push"] = "pub",
    realtime: bool = True,
    frame_samples: int = 1,
    startup_delay: float = 0.5,
    stop: threading.Event | None = None,
    on_bound: Callable[[str], None] | None = None,
    curve: CurveServer | None = None,
    hwm: int = 10_000,
) -> int:
    """Publish `seconds` of the population on `endpoint`; returns the samples sent.

    `startup_delay` gives subscribers time to connect before the hello (PUB drops what is sent
    before a subscriber joins); `on_bound(endpoint)` is called with the bound address."""
    n_samples = round(seconds * population.rate)
    with Publisher(endpoint, pattern=pattern, hwm=hwm, curve=curve) as publisher:
        if on_bound is not None:
            on_bound(publisher.endpoint)
        time.sleep(startup_delay)
        return play(
            publisher,
            stream,
            _blocks(population, n_samples, max(frame_samples, 50)),
            rate=population.rate,
            kind=population.kind,
            realtime=realtime,
            frame_samples=frame_samples,
            meta=population.hello_meta(),
            stop=stop,
        )


def _blocks(
    population: LatentPoissonPopulation, n_samples: int, block: int
) -> Iterator[np.ndarray]:
    for lo in range(0, n_samples, block):
        data, _ = population.sample(min(block, n_samples - lo))
        yield data

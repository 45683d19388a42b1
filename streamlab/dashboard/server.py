"""`streamlab dashboard`: a Bokeh server embedded in this process (no `bokeh serve` to run),
serving the live page on localhost. BokehJS comes from the server itself, so the page works
with no network beyond the loopback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from streamlab.dashboard.feed import Feed, LiveFeed, StoreFeed
from streamlab.errors import ConfigError


def feed_factory(listen: str | None, store: str | None, window: int) -> Callable[[], Feed]:
    """How each browser session gets its own feed: a subscriber to `listen` (the endpoint given
    to `attach --publish`) or a follower of the run store at `store`."""
    if (listen is None) == (store is None):
        raise ConfigError(
            "give exactly one of --listen ENDPOINT (the endpoint of `attach --publish`) or "
            "--store PATH (a run store to follow)"
        )
    if listen is not None:
        return lambda: LiveFeed(listen, window=window)
    assert store is not None
    return lambda: StoreFeed(store, window=window)


def serve(
    make_feed: Callable[[], Feed],
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    title: str = "streamlab",
    window: int = 2000,
) -> None:
    """Serve the dashboard at http://ADDRESS:PORT/ until interrupted (Ctrl-C or SIGTERM)."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    from streamlab.dashboard.page import make_document

    application = Application(FunctionHandler(make_document(make_feed, title, window=window)))
    origins = [f"{host}:{port}" for host in {address, "localhost", "127.0.0.1"}]
    try:
        server = Server(
            {"/": application},
            port=port,
            address=address,
            allow_websocket_origin=origins,
            num_procs=1,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the dashboard on {address}:{port}: {exc.strerror}; pick another --port"
        ) from exc
    server.start()
    print(f"dashboard: http://{address}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)

    def stop(*_: object) -> None:
        server.io_loop.add_callback(server.io_loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.io_loop.start()
    server.stop()

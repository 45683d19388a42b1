"""The dashboard's Bokeh document: one page per browser session, fed by a `Feed` polled 10 times
a second. Every plot streams into a `ColumnDataSource` with a rollover (or replaces a fixed-size
array), so a page left open for hours holds what it shows and no more.

The page, top to bottom: a header line (where the data comes from), the loop's health
(throughput, latency p50/p99 over time, the latency histogram of the last 10 s, counters), one
panel per learner drawn by its role (latent trajectories, decoded vs true, a stacked state
posterior, a control signal), and a heat map of the incoming channels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColorBar, ColumnDataSource, DataRange1d, Div, LinearColorMapper, Range1d
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from streamlab.dashboard.feed import Feed, Health, LearnerInfo, Update

POLL_MS = 100  # 10 Hz
MAX_LINES = 8  # components drawn per learner
HEALTH_POINTS = 600  # one minute of health at 10 Hz
HIST_FRAMES = 100  # the latency histogram sums the last 10 s of health frames
ROLE_TITLES = {
    "latent": "latent trajectories",
    "posterior": "state posterior (stacked)",
    "decoder": "decoded vs true",
    "control": "control signal",
}
WIDTH = 620
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def _figure(title: str, x_label: str, y_label: str, **kw: object) -> figure:
    fig = figure(title=title, width=WIDTH, height=230, tools=TOOLS, toolbar_location="right", **kw)
    fig.xaxis.axis_label = x_label
    fig.yaxis.axis_label = y_label
    fig.title.text_font_size = "13px"
    return fig


class DashboardPage:
    """The models of one page and how each poll of the feed updates them."""

    def __init__(
        self,
        feed: Feed,
        title: str,
        *,
        window: int = 2000,
        heat_bins: int = 600,
        max_channels: int = 128,
    ) -> None:
        self.feed = feed
        self.window = window
        self.heat_bins = heat_bins
        self.max_channels = max_channels
        self.header = Div(
            text=f"<h2 style='margin:4px 0'>{title}</h2><div id='status'>starting ...</div>",
            width=2 * WIDTH,
            name="header",
        )
        self.counters = Div(text="", width=WIDTH, name="counters")
        self._health_src = ColumnDataSource(
            {"elapsed": [], "rate": [], "p50": [], "p99": []}, name="health-source"
        )
        self._hist_src = ColumnDataSource(
            {"left": [], "right": [], "count": []}, name="hist-source"
        )
        self._hists: deque[np.ndarray] = deque(maxlen=HIST_FRAMES)
        self._learner_src: dict[str, ColumnDataSource] = {}
        self._true_src: dict[str, ColumnDataSource] = {}
        self._infos: dict[str, LearnerInfo] = {}
        self._heat_cols: deque[np.ndarray] = deque(maxlen=heat_bins)
        self._heat_t: deque[float] = deque(maxlen=heat_bins)
        self._heat_src = ColumnDataSource(
            {"image": [], "x": [], "y": [], "dw": [], "dh": []}, name="input-source"
        )
        self._mapper = LinearColorMapper(palette=Viridis256, low=0.0, high=1.0)
        self._waiting = Div(text="<i>waiting for the learners' first outputs ...</i>")
        self.learner_panels = column(self._waiting, name="learners")
        self.root = column(
            self.header,
            row(self._throughput_plot(), self._latency_plot()),
            row(self._histogram_plot(), self.counters),
            self.learner_panels,
            self._heat_plot(),
            name="dashboard",
        )

    # -- the fixed plots ------------------------------------------------------------------------
    def _throughput_plot(self) -> figure:
        fig = _figure(
            "throughput", "wall time since the run started (s)", "samples / s", name="throughput"
        )
        fig.line("elapsed", "rate", source=self._health_src, line_width=2, legend_label="samples/s")
        fig.legend.location = "bottom_left"
        return fig

    def _latency_plot(self) -> figure:
        fig = _figure(
            "latency per sample (arrival -> output)",
            "wall time since the run started (s)",
            "µs",
            y_axis_type="log",
        )
        for key, colour in (("p50", Category10_10[0]), ("p99", Category10_10[3])):
            fig.line(
                "elapsed",
                key,
                source=self._health_src,
                color=colour,
                line_width=2,
                legend_label=key,
            )
        fig.legend.location = "bottom_left"
        return fig

    def _histogram_plot(self) -> figure:
        fig = _figure(
            "latency distribution, last 10 s",
            "latency per sample (µs)",
            "samples",
            x_axis_type="log",
        )
        fig.quad(
            left="left",
            right="right",
            top="count",
            bottom=0,
            source=self._hist_src,
            color=Category10_10[7],
            line_color="white",
        )
        return fig

    def _heat_plot(self) -> figure:
        fig = _figure(
            "input: mean per channel per bin (heat map)",
            "stream time (s)",
            "channel",
            name="input-heatmap",
        )
        fig.width = 2 * WIDTH
        fig.height = 280
        fig.image(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self._heat_src,
            color_mapper=self._mapper,
        )  # fmt: skip
        fig.add_layout(
            ColorBar(color_mapper=self._mapper, title="mean per sample", width=10), "right"
        )
        return fig

    # -- per learner ----------------------------------------------------------------------------
    def _add_learner(self, info: LearnerInfo) -> None:
        k = max(info.n_components, 1)
        keys = [f"c{i}" for i in range(k)]
        source = ColumnDataSource(
            {"t": [], **{key: [] for key in keys}}, name=f"source-{info.name}"
        )
        self._learner_src[info.name] = source
        role = info.role
        fig = _figure(
            f"{info.name} ({info.cls}): {ROLE_TITLES[role]}",
            "stream time (s)",
            {"posterior": "P(state)", "control": "control", "decoder": "value"}.get(role, "output"),
            name=f"plot-{info.name}",
        )
        fig.width = 2 * WIDTH
        if role == "posterior":
            fig.varea_stack(
                stackers=keys,
                x="t",
                source=source,
                color=[Category10_10[i % 10] for i in range(k)],
                legend_label=[f"state {i}" for i in range(k)],
            )
            fig.y_range = Range1d(0, 1)
        else:
            lines = []
            for i, key in enumerate(keys[:MAX_LINES]):
                label = info.y[i] if role == "decoder" else f"{role[:7]} {i}"
                lines.append(fig.line(
                    "t", key, source=source, color=Category10_10[i % 10], line_width=1.5,
                    legend_label=f"decoded {label}" if role == "decoder" else label,
                ))  # fmt: skip
            # the learner's own rows set the time window (a true variable may reach further back)
            fig.x_range = DataRange1d(renderers=lines)
        if role == "decoder":
            true_keys = [f"y{i}" for i in range(len(info.y_index))]
            truth = ColumnDataSource(
                {"t": [], **{key: [] for key in true_keys}}, name=f"true-{info.name}"
            )
            self._true_src[info.name] = truth
            for i, key in enumerate(true_keys[:MAX_LINES]):
                fig.line(
                    "t", key, source=truth, color=Category10_10[i % 10], line_dash="dashed",
                    line_width=2, alpha=0.7, legend_label=f"true {info.y[i]}",
                )  # fmt: skip
        fig.legend.location = "top_left"
        fig.legend.orientation = "horizontal"
        fig.legend.background_fill_alpha = 0.6
        fig.legend.click_policy = "hide"
        if self._waiting in self.learner_panels.children:
            self.learner_panels.children.remove(self._waiting)
        self.learner_panels.children.append(fig)
        self._infos[info.name] = info

    # -- each poll ------------------------------------------------------------------------------
    def update(self) -> None:
        """Poll the feed once and stream what came into the plots."""
        update = self.feed.poll()
        if update.status:
            status = update.status.replace("&", "&amp;").replace("<", "&lt;")
            head = self.header.text.split("<div id='status'>")[0]
            self.header.text = f"{head}<div id='status'>{status}</div>"
        for name, info in update.info.items():
            if name not in self._infos and info.n_components:
                self._add_learner(info)
        for name, (t, values) in update.learners.items():
            if name in self._learner_src:
                self._stream_learner(name, t, values)
        if update.health:
            self._stream_health(update.health)
        if update.input is not None:
            self._stream_input(update, *update.input)

    def _stream_learner(self, name: str, t: np.ndarray, values: np.ndarray) -> None:
        source = self._learner_src[name]
        k = len(source.data) - 1
        data = {"t": t.tolist()}
        for i in range(k):
            data[f"c{i}"] = (values[:, i] if i < values.shape[1] else np.zeros(len(t))).tolist()
        source.stream(data, rollover=self.window)

    def _stream_health(self, health: list[Health]) -> None:
        self._health_src.stream(
            {
                "elapsed": [h["elapsed_s"] for h in health],
                "rate": [h["samples_per_s"] for h in health],
                "p50": [h["latency_p50_us"] for h in health],
                "p99": [h["latency_p99_us"] for h in health],
            },
            rollover=HEALTH_POINTS,
        )
        for h in health:
            self._hists.append(h.hist)
        last = health[-1]
        edges = last.edges_us
        counts = np.sum([h for h in self._hists if len(h) == len(edges) - 1], axis=0)
        self._hist_src.data = {
            "left": edges[:-1].tolist(),
            "right": edges[1:].tolist(),
            "count": np.asarray(counts, dtype=np.float64).tolist(),
        }
        age, rate = last["checkpoint_age_s"], last["samples_per_s"]
        rows = [
            ("samples", f"{last['samples']:,.0f}"),
            ("samples / s", "-" if np.isnan(rate) else f"{rate:,.0f}"),
            (
                "latency p50 / p99",
                f"{last['latency_p50_us']:.0f} / {last['latency_p99_us']:.0f} µs",
            ),
            ("behind the source", _seconds(last["behind_s"])),
            ("gaps", f"{last['gaps']:,.0f}"),
            ("dropped (missing) samples", f"{last['missing']:,.0f}"),
            ("rejected messages", f"{last['rejects']:,.0f}"),
            ("checkpoints", f"{last['checkpoints']:,.0f}"),
            ("checkpoint age", "none yet" if np.isnan(age) else f"{age:.1f} s"),
            ("divergences", f"{last['divergences']:,.0f}"),
        ]
        cells = "".join(
            f"<tr><td style='padding:2px 12px 2px 0'>{k}</td><td style='text-align:right'>"
            f"<b>{v}</b></td></tr>"
            for k, v in rows
        )
        self.counters.text = f"<h3 style='margin:4px 0'>loop health</h3><table>{cells}</table>"

    def _stream_input(self, update: Update, t: np.ndarray, values: np.ndarray) -> None:
        for name, info in self._infos.items():  # the true variable beside a decoded one
            truth = self._true_src.get(name)
            if truth is not None and info.y_index and max(info.y_index) < values.shape[1]:
                data = {"t": t.tolist()}
                for i, channel in enumerate(info.y_index):
                    data[f"y{i}"] = values[:, channel].tolist()
                truth.stream(data, rollover=self.window)
        n = values.shape[1]
        groups = int(np.ceil(n / self.max_channels))
        shown = int(np.ceil(n / groups))
        padded = np.zeros((len(values), shown * groups))
        padded[:, :n] = values
        pooled = padded.reshape(len(values), shown, groups).mean(axis=2)
        for when, col in zip(t, pooled, strict=True):
            self._heat_t.append(float(when))
            self._heat_cols.append(col)
        image = np.column_stack(self._heat_cols)
        times = np.fromiter(self._heat_t, dtype=np.float64)
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.05
        self._mapper.low = float(np.percentile(image, 1))
        self._mapper.high = max(float(np.percentile(image, 99)), self._mapper.low + 1e-9)
        self._heat_src.data = {
            "image": [image],
            "x": [times[0]],
            "y": [-0.5 * groups],
            "dw": [max(times[-1] - times[0] + step, 1e-6)],
            "dh": [shown * groups],
        }


def make_document(make_feed: Callable[[], Feed], title: str, **page_options: int) -> Callable:
    """The function Bokeh calls for each new browser session: a page with its own feed, polled
    every `POLL_MS` ms, closed with the session."""

    def build(doc: Document) -> None:
        feed = make_feed()
        page = DashboardPage(feed, title, **page_options)
        doc.title = title
        doc.add_root(page.root)
        doc.add_periodic_callback(page.update, POLL_MS)
        doc.on_session_destroyed(lambda _context: feed.close())

    return build


def _seconds(value: float) -> str:
    """A health figure in seconds, or a dash where the source did not report it."""
    return "-" if np.isnan(value) else f"{value:.1f} s"

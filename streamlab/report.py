"""`streamlab report`: one run's store as a page a person can read the morning after.

`write_report(store, out)` draws PNGs with Matplotlib (the Agg canvas, through `Figure` objects
rather than pyplot, so reports can be drawn from several threads at once, as the nightly flow
does) and writes `report.html` beside them. The page embeds every image as base64, so it stays
whole when mailed or moved without its folder; the PNG files are there for slides and issues.

What it shows, for whatever the store holds: per learner its outputs (latent trajectories, or a
stacked state posterior with its state sequence, or a control signal), its learning curves
(running means of extra per-sample outputs such as `log_likelihood`; for decoders the decoding
error over time against a running-mean baseline, when the input with its target was recorded;
for controllers the cost), the latency distribution and its course, gaps and rejects, and the
run's configuration and package versions.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from streamlab.dashboard.feed import bin_rows, learner_role, resolve_channels
from streamlab.learners.registry import learner_targets
from streamlab.store.inspect import describe
from streamlab.store.run_store import RunStore

TRAJECTORY_SECONDS = 20.0  # the outputs' panel shows the run's last stretch at full resolution
MAX_POINTS = 4000  # whole-run curves are drawn from at most this many points
MAX_LINES = 6
DPI = 100


@dataclass(frozen=True)
class TimeAxis:
    """What the runs' time axis counts: seconds on the source's clock, or, for a closed-loop
    plant (whose samples are stamped with their step number), plant steps."""

    label: str = "stream time (s)"
    unit: str = "s"
    stretch: float = TRAJECTORY_SECONDS  # the trajectory panels' last stretch, in `unit`

    @classmethod
    def of(cls, stream: dict[str, Any]) -> TimeAxis:
        if stream.get("kind") == "plant":
            return cls("plant step (closed loop)", "steps", 500.0)
        return cls()


@dataclass
class Section:
    """One block of the page: a heading, a short text and the images drawn for it."""

    title: str
    text: str = ""
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG bytes)


def default_out(store: str | os.PathLike[str]) -> Path:
    """`run.zarr` -> `run-report/`, beside the store."""
    path = Path(store)
    name = path.name[: -len(".zarr")] if path.name.endswith(".zarr") else path.name
    return path.with_name(f"{name}-report")


def write_report(store: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Draw the report of the run at `store` into folder `out` (default: `default_out`): PNGs
    and a self-contained `report.html`; returns the HTML's path."""
    out_dir = Path(out) if out is not None else default_out(store)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = build_sections(str(store))
    for section in sections:
        for name, png in section.images:
            (out_dir / name).write_bytes(png)
    page = out_dir / "report.html"
    page.write_text(render_html(str(store), sections), encoding="utf-8")
    return page


def build_sections(path: str) -> list[Section]:
    """Every section of the report of the run at `path`, images drawn."""
    info = describe(path)
    store = RunStore.open(path)
    attrs = store.attrs
    stream = attrs.get("stream") or {}
    axis = TimeAxis.of(stream)
    names = (stream.get("meta") or {}).get("channels")
    names = [str(c) for c in names] if isinstance(names, list) else None
    config = info["config"]
    targets = learner_targets(config["learners"]) if config.get("learners") else {}
    inputs = _read_input(store)
    calibration_t = (attrs.get("calibration") or {}).get("first_decoded_t")
    sections = [_overview(info)]
    latencies: dict[str, np.ndarray] = {}
    times: dict[str, np.ndarray] = {}
    for name in store.learner_names():
        table = store.learner(name)
        if table.rows == 0:
            sections.append(Section(f"learner {name}", "no rows were written."))
            continue
        cls = info["learners"][name]["learner"].get("class", "?")
        y = [str(c) for c in targets.get(name, ())]
        y_index = resolve_channels(y, names, int(stream.get("n_channels", 0)))
        columns = {key: table.read(key) for key in table.columns}
        latencies[name] = columns["latency_us"].astype(np.float64)
        times[name] = columns["t"].astype(np.float64)
        sections.append(
            _learner_section(name, cls, columns, y, y_index, inputs, axis, calibration_t)
        )
    if config.get("calibrate") is not None:
        sections.append(_scores_section(path))
    if latencies:
        sections.append(_latency_section(latencies, times, axis))
    sections.append(_events_section(store, info))
    if inputs is not None:
        sections.append(_input_section(*inputs, names, axis))
    sections.append(_config_section(info))
    return sections


# -- sections -----------------------------------------------------------------------------------
def _overview(info: dict[str, Any]) -> Section:
    stream = info["stream"]
    rows = [
        ("status", info["status"] + (f" ({info['error']})" if info.get("error") else "")),
        ("created / ended", f"{info.get('created')} / {info.get('ended') or '-'}"),
        (
            "stream",
            f"{stream.get('name', '?')}: {stream.get('n_channels', '?')} channels, "
            f"{stream.get('kind', '?')}, {stream.get('rate') or '?'} Hz",
        ),
        (
            "learners",
            ", ".join(
                f"{name} ({learner['learner'].get('class', '?')}, {learner['rows']:,d} rows)"
                for name, learner in info["learners"].items()
            )
            or "none",
        ),
        ("gaps", f"{info['gaps']['count']} ({info['gaps']['missing']:,d} samples missing)"),
        ("rejected messages", str(info["rejected"]["count"])),
        ("input recorded", f"{info['input_rows']:,d} rows" if info["input_rows"] else "no"),
        ("resumes", str(len(info["resumes"]))),
    ]
    return Section("Overview", _table(rows))


def _learner_section(
    name: str,
    cls: str,
    columns: dict[str, np.ndarray],
    y: list[str],
    y_index: list[int],
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    axis: TimeAxis,
    calibration_t: float | None = None,
) -> Section:
    output = columns["output"].astype(np.float64)
    t = columns["t"].astype(np.float64)
    role = learner_role(cls, output.shape[1], y)
    section = Section(f"Learner {name} ({cls})")
    notes = [f"{len(t):,d} samples, {output.shape[1]} outputs, role: {role}."]
    section.images.append((f"{name}-outputs.png", _outputs_png(name, role, t, output, y, axis)))
    if role == "posterior":
        section.images.append((f"{name}-states.png", _states_png(name, t, output, axis)))
    standard = {"output", "seq", "t", "latency_us"}
    for key in sorted(set(columns) - standard):
        section.images.append(
            (f"{name}-{key}.png", _curve_png(name, key, t, columns[key].astype(np.float64), axis))
        )
    truth = _truth(t, columns["seq"], y_index, inputs)
    if role == "decoder" and truth is not None:
        png, summary = _decoding_png(name, t, output, truth, y, axis, calibration_t)
        section.images.append((f"{name}-decoding-error.png", png))
        notes.append(summary)
    elif role == "control" and truth is not None:
        section.images.append((f"{name}-cost.png", _curve_png(name, y[0], t, truth, axis)))
    elif y and truth is None:
        what, why = (
            ("cost", "draw the cost curve")
            if role == "control"
            else ("target", "compare decoded with true")
        )
        notes.append(
            f"its {what} ({'+'.join(y)}) was not recorded: run with --record-input to {why}."
        )
    section.text = "<p>" + " ".join(html.escape(n) for n in notes) + "</p>"
    return section


def _scores_section(path: str) -> Section:
    """The decoders' scores on the decoded part beside the baselines (`streamlab score`)."""
    from streamlab.errors import StreamlabError
    from streamlab.scoring import score_store

    section = Section("Decoding after calibration")
    try:
        tables = score_store(path)
    except StreamlabError as exc:
        section.text = f"<p>not scored: {html.escape(str(exc))}</p>"
        return section
    section.text = (
        "<p>R² and median absolute error on the samples decoded without labels, beside the "
        "calibration mean, ridge on square-root counts with lags and an offline Kalman decoder "
        "(all fit on the calibration part), and each decoder rerun on spikes circularly shifted "
        "against the labels (its score should collapse).</p>"
        + "".join(
            f"<h3>{html.escape(name)}</h3><pre>{html.escape(table.format())}</pre>"
            for name, table in tables.items()
        )
    )
    return section


def _latency_section(
    latencies: dict[str, np.ndarray], times: dict[str, np.ndarray], axis: TimeAxis
) -> Section:
    fig = Figure(figsize=(12, 3.8), dpi=DPI, layout="constrained")
    hist_ax, time_ax = fig.subplots(1, 2)
    lines = []
    for i, (name, latency) in enumerate(latencies.items()):
        colour = f"C{i}"
        positive = latency[latency > 0]
        if not len(positive):
            continue
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max() * 1.01), 60)
        hist_ax.hist(positive, bins=bins, histtype="step", color=colour, lw=1.5, label=name)
        p50, p99 = np.percentile(positive, (50, 99))
        hist_ax.axvline(p99, color=colour, ls="--", lw=1)
        lines.append((name, p50, p99, positive.max()))
        t = times[name]
        window = max(len(t) // 200, 1)
        q = _rolling_quantiles(latency, window)
        time_ax.plot(t[window - 1 :: window][: len(q)], q[:, 0], color=colour, label=f"{name} p50")
        time_ax.plot(
            t[window - 1 :: window][: len(q)], q[:, 1], color=colour, ls="--", label=f"{name} p99"
        )
    hist_ax.set(
        xscale="log",
        xlabel="latency per sample, arrival -> output (µs)",
        ylabel="samples",
        title="Latency distribution (dashed: p99)",
    )
    hist_ax.legend(fontsize=8)
    time_ax.set(yscale="log", xlabel=axis.label, ylabel="µs", title="Latency over the run (blocks)")
    time_ax.legend(fontsize=8, ncol=2)
    for ax in (hist_ax, time_ax):
        ax.grid(alpha=0.3)
    rows = [(n, f"p50 {a:,.0f} µs, p99 {b:,.0f} µs, max {c:,.0f} µs") for n, a, b, c in lines]
    return Section("Latency", _table(rows), [("latency.png", _png(fig))])


def _events_section(store: RunStore, info: dict[str, Any]) -> Section:
    gaps, rejected = store.gaps, store.rejected
    section = Section("Gaps and rejects")
    if not gaps.rows and not rejected.rows:
        section.text = (
            "<p>No gaps and no rejected messages: every sample arrived and was valid.</p>"
        )
        return section
    fig = Figure(figsize=(12, 3.4), dpi=DPI, layout="constrained")
    gap_ax, reject_ax = fig.subplots(1, 2)
    if gaps.rows:
        first = gaps.read("first_seq").astype(np.float64)
        missing = gaps.read("n_missing").astype(np.float64)
        gap_ax.vlines(first, 0, missing, color="C3")
        gap_ax.plot(first, missing, "o", color="C3", ms=4)
    gap_ax.set(
        xlabel="seq of the first missing sample",
        ylabel="samples missing",
        title=f"Gaps: {gaps.rows} ({info['gaps']['missing']:,d} samples)",
    )
    by_code = info["rejected"]["by_code"]
    if by_code:
        codes = sorted(by_code)
        reject_ax.bar(codes, [by_code[c] for c in codes], color="C1")
    reject_ax.set(xlabel="reason", ylabel="messages", title=f"Rejected messages: {rejected.rows}")
    for ax in (gap_ax, reject_ax):
        ax.grid(alpha=0.3)
    rows = [
        (f"gap at seq {g['first_seq']}", f"{g['n_missing']} missing ({g['reason']})")
        for g in info["gaps"]["rows"]
    ]
    section.text = _table(rows) if rows else ""
    section.images.append(("events.png", _png(fig)))
    return section


def _input_section(
    t: np.ndarray, seq: np.ndarray, data: np.ndarray, names: Any, axis: TimeAxis
) -> Section:
    bin_s = max((t[-1] - t[0]) / 600, 1e-3) if len(t) > 1 else 1.0
    bt, binned = bin_rows(t, data.astype(np.float64), bin_s)
    fig = Figure(figsize=(12, 3.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(
        binned.T,
        aspect="auto",
        origin="lower",
        extent=(bt[0], bt[-1] + bin_s, -0.5, binned.shape[1] - 0.5),
        cmap="viridis",
        vmin=np.percentile(binned, 1),
        vmax=np.percentile(binned, 99),
        interpolation="nearest",
    )
    ax.set(
        xlabel=axis.label,
        ylabel="channel",
        title=f"Input: mean per channel in bins of {bin_s * 1e3:.0f} ms",
    )
    if isinstance(names, list) and len(names) == binned.shape[1] <= 20:
        ax.set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(image, ax=ax, label="mean per sample")
    return Section("Input", "", [("input.png", _png(fig))])


def _config_section(info: dict[str, Any]) -> Section:
    versions = dict(info["versions"])
    with contextlib.suppress(PackageNotFoundError):
        versions["matplotlib (this report)"] = version("matplotlib")
    return Section(
        "Configuration and versions",
        "<h3>versions at run time</h3>"
        + _table(sorted(versions.items()))
        + "<h3>configuration</h3><pre>"
        + html.escape(json.dumps(info["config"], indent=1, default=str))
        + "</pre>",
    )


# -- drawings -----------------------------------------------------------------------------------
def _outputs_png(
    name: str, role: str, t: np.ndarray, output: np.ndarray, y: list[str], axis: TimeAxis
) -> bytes:
    fig = Figure(figsize=(12, 3.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    last = t >= t[-1] - axis.stretch
    tt, out = t[last], output[last]
    if role == "posterior":
        ax.stackplot(tt, out.T, labels=[f"state {k}" for k in range(out.shape[1])], alpha=0.9)
        ax.set(ylim=(0, 1), ylabel="P(state)")
        title = "State posterior (stacked)"
    else:
        for i in range(min(out.shape[1], MAX_LINES)):
            label = {"decoder": f"decoded {y[i] if i < len(y) else i}", "control": f"control {i}"}
            ax.plot(tt, out[:, i], lw=1, label=label.get(role, f"output {i}"))
        ax.set(ylabel="output")
        title = {"decoder": "Decoded variable", "control": "Control signal"}.get(
            role, "Latent trajectories"
        )
    if role != "posterior":
        title += _shown(out.shape[1])
    ax.set(xlabel=axis.label, title=f"{name}: {title}, last {tt[-1] - tt[0]:.4g} {axis.unit}")
    ax.legend(fontsize=8, loc="upper left", ncol=min(out.shape[1], 6))
    ax.grid(alpha=0.3)
    return _png(fig)


def _shown(n: int) -> str:
    """What a panel leaves out, said in its title: the first MAX_LINES of `n` lines."""
    return f" (the first {MAX_LINES} of {n} shown)" if n > MAX_LINES else ""


def _states_png(name: str, t: np.ndarray, posterior: np.ndarray, axis: TimeAxis) -> bytes:
    """The state sequence (argmax of the posterior) over the whole run, and each state's
    occupancy."""
    states = np.argmax(posterior, axis=1)
    k = posterior.shape[1]
    fig = Figure(figsize=(12, 3.0), dpi=DPI, layout="constrained")
    seq_ax, occ_ax = fig.subplots(1, 2, width_ratios=(4, 1))
    stride = max(len(t) // MAX_POINTS, 1)
    seq_ax.step(t[::stride], states[::stride], where="post", lw=0.8, color="k")
    seq_ax.set(
        xlabel=axis.label,
        ylabel="state",
        yticks=range(k),
        title=f"{name}: state sequence (argmax of the posterior)",
    )
    occupancy = np.bincount(states, minlength=k) / len(states)
    occ_ax.bar(range(k), occupancy, color=[f"C{i}" for i in range(k)])
    occ_ax.set(xlabel="state", ylabel="fraction of samples", title="occupancy", xticks=range(k))
    for ax in (seq_ax, occ_ax):
        ax.grid(alpha=0.3)
    return _png(fig)


def _curve_png(name: str, key: str, t: np.ndarray, values: np.ndarray, axis: TimeAxis) -> bytes:
    """A learning curve: a per-sample value and its running mean over ~2% of the run."""
    values = values.reshape(len(values), -1)
    fig = Figure(figsize=(12, 3.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    window = max(len(t) // 50, 1)
    stride = max(len(t) // MAX_POINTS, 1)
    for i in range(min(values.shape[1], MAX_LINES)):
        label = key if values.shape[1] == 1 else f"{key} {i}"
        ax.plot(t[::stride], values[::stride, i], lw=0.5, alpha=0.3, color=f"C{i}")
        ax.plot(t, _running_mean(values[:, i], window), lw=1.8, color=f"C{i}", label=label)
    ax.set(
        xlabel=axis.label,
        ylabel=key,
        title=f"{name}: {key} per sample (faint) and its running mean over {window} samples"
        + _shown(values.shape[1]),
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _decoding_png(
    name: str,
    t: np.ndarray,
    decoded: np.ndarray,
    truth: np.ndarray,
    y: list[str],
    axis: TimeAxis,
    calibration_t: float | None = None,
) -> tuple[bytes, str]:
    """Decoding error over the run against the running-mean baseline (predicting each target
    by its mean so far: what a decoder that learned nothing from the neurons would do); with a
    calibration, the boundary is marked and the trace panel shows the decoded part's start."""
    k = min(decoded.shape[1], truth.shape[1])
    decoded, truth = decoded[:, :k], truth[:, :k]
    counts = np.arange(1, len(truth) + 1)[:, None]
    baseline = np.vstack([truth[:1] * 0, (np.cumsum(truth, axis=0) / counts)[:-1]])
    window = max(len(t) // 50, 1)
    err = np.sqrt(_running_mean(((decoded - truth) ** 2).mean(axis=1), window))
    base = np.sqrt(_running_mean(((baseline - truth) ** 2).mean(axis=1), window))
    fig = Figure(figsize=(12, 3.6), dpi=DPI, layout="constrained")
    trace_ax, err_ax = fig.subplots(1, 2)
    if calibration_t is not None and t[-1] >= calibration_t:
        last = (t >= calibration_t) & (t < calibration_t + axis.stretch)
    else:
        last = t >= t[-1] - axis.stretch
    for i in range(min(k, 3)):
        trace_ax.plot(t[last], truth[last, i], color=f"C{i}", lw=2, alpha=0.6, label=f"true {y[i]}")
        trace_ax.plot(t[last], decoded[last, i], color=f"C{i}", lw=1, ls="--", label="decoded")
    part = "decoded part" if calibration_t is not None else "last stretch"
    title = f"{name}: decoded vs true ({part})"
    trace_ax.set(xlabel=axis.label, ylabel="value", title=title)
    trace_ax.legend(fontsize=8, ncol=2)
    err_ax.plot(t, err, color="C0", lw=1.5, label=f"{name} RMSE")
    err_ax.plot(t, base, color="0.4", lw=1.5, ls="--", label="baseline: running mean of target")
    err_ax.set(
        xlabel=axis.label,
        ylabel=f"RMSE over {window} samples",
        title="Decoding error over the run",
    )
    if calibration_t is not None:
        err_ax.axvline(calibration_t, color="k", lw=1, ls=":", label="calibration ends")
    err_ax.legend(fontsize=8)
    for ax in (trace_ax, err_ax):
        ax.grid(alpha=0.3)
    if calibration_t is not None and t[-1] >= calibration_t:
        half, where = int(np.searchsorted(t, calibration_t)), "the decoded part (no labels)"
    else:
        half, where = len(t) // 2, "the second half (labels given: how well it follows y)"
    final = float(np.sqrt(((decoded[half:] - truth[half:]) ** 2).mean()))
    final_base = float(np.sqrt(((baseline[half:] - truth[half:]) ** 2).mean()))
    summary = (
        f"Decoding RMSE over {where} {final:.3g}, against {final_base:.3g} for the "
        "running-mean baseline."
    )
    return _png(fig), summary


# -- helpers ------------------------------------------------------------------------------------
def _read_input(store: RunStore) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not store.has_input or store.input().rows == 0:
        return None
    table = store.input()
    return (
        table.read("t").astype(np.float64),
        table.read("seq").astype(np.int64),
        table.read("data"),
    )


def _truth(
    t: np.ndarray,
    seq: np.ndarray,
    y_index: list[int],
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> np.ndarray | None:
    """The recorded y channels at each of a learner's rows (matched by seq), or None."""
    if inputs is None or not y_index:
        return None
    _, input_seq, data = inputs
    where = np.searchsorted(input_seq, seq.astype(np.int64))
    where = np.clip(where, 0, len(input_seq) - 1)
    if not np.array_equal(input_seq[where], seq.astype(np.int64)):
        return None  # rows without a recorded input (a resumed run that did not record)
    return data[where][:, y_index].astype(np.float64)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start)."""
    cumulative = np.cumsum(np.r_[0.0, values])
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - window, 0)
    return (cumulative[n] - cumulative[lo]) / (n - lo)


def _rolling_quantiles(values: np.ndarray, block: int) -> np.ndarray:
    """p50 and p99 of consecutive blocks of `block` values, (blocks, 2)."""
    n = len(values) // block
    if n == 0:
        return np.percentile(values, (50, 99))[None, :]
    blocks = values[: n * block].reshape(n, block)
    return np.percentile(blocks, (50, 99), axis=1).T


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def render_html(store: str, sections: list[Section]) -> str:
    """The page: every section's text and its images inline (base64), nothing fetched."""
    body = []
    for section in sections:
        body.append(f"<section><h2>{html.escape(section.title)}</h2>{section.text}")
        for name, png in section.images:
            data = base64.b64encode(png).decode("ascii")
            body.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(name)}'>"
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
        body.append("</section>")
    style = (
        "body{font-family:sans-serif;max-width:1240px;margin:auto;padding:0 12px;color:#222}"
        "table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left;font-size:14px}th{background:#f4f4f4}img{max-width:100%}"
        "figure{margin:8px 0}figcaption{font-size:12px;color:#666}pre{background:#f6f6f6;"
        "padding:8px;font-size:12px;overflow:auto}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>streamlab report: {html.escape(Path(store).name)}</title>"
        f"<style>{style}</style></head><body>"
        f"<h1>streamlab report: {html.escape(Path(store).name)}</h1>"
        f"<p>store <code>{html.escape(str(store))}</code></p>" + "".join(body) + "</body></html>"
    )

"""The demo flow: a simulated rig publishes over loopback ZeroMQ, a pipeline runs online
similarity matching into a local Zarr store, and a report compares it with batch PCA. It runs
on Prefect's embedded ephemeral API: nothing to start or configure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from streamlab.cli import ProgressPrinter
from streamlab.demo import DemoRig, evaluate, free_tcp_endpoint, plot, summary_text
from streamlab.paths import confined_store
from streamlab.runner import AttachOptions, attach


@task(cache_policy=NO_CACHE)
def run_pipeline(endpoint: str, store: str, seconds: float, n_components: int) -> dict[str, Any]:
    """Attach the similarity-matching learner to the rig and stream until its eos."""
    options = AttachOptions(
        store=store,
        learners=[f"sm:n_components={n_components}"],
        record_input=True,
        checkpoint_every=250,
        keep_checkpoints=0,  # the report plots every checkpoint
        overwrite=True,
    )
    progress = attach(
        endpoint, options, seconds=seconds + 30.0, until_eos=True, on_progress=ProgressPrinter()
    )
    return progress.to_dict()


@task(cache_policy=NO_CACHE)
def report(store: str, rig: DemoRig, progress: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the run against batch PCA and the true latents; write the PNG beside the store."""
    result = evaluate(store, rig)
    png = None
    if not result.get("too_short"):
        png = plot(result, str(Path(store).with_suffix(".png")))
    text = summary_text(progress, result, store, png)
    numbers = {
        k: result[k] for k in ("final_subspace_error", "r2_online", "r2_batch_pca") if k in result
    }
    return {"summary": text, "png": png, **numbers}


@flow(name="streamlab-demo", log_prints=False)
def demo_flow(
    seconds: float = 20.0,
    store: str = "streamlab-demo/run.zarr",
    channels: int = 128,
    rate: float = 250.0,
    n_components: int = 4,
) -> dict[str, Any]:
    """Stream a simulated rig for `seconds` into online similarity matching and report."""
    store = confined_store(store)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    rig = DemoRig(channels=channels, rate=rate, latents=n_components)
    endpoint = free_tcp_endpoint()
    process = rig.start(endpoint, seconds)
    try:
        progress = run_pipeline(endpoint, store, seconds, n_components)
    finally:
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()
            process.wait()
    if process.returncode not in (0, None):
        err = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise RuntimeError(f"the simulated rig exited with {process.returncode}: {err[-500:]}")
    result = report(store, rig, progress)
    return {"status": "complete", "store": store, **result, "progress": progress}

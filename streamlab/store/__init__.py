"""The Zarr v3 run store: one group per run, learners' outputs, checkpoints, events and input."""

"""Prefect flows (installed as `streamlab.flows`): replay of recorded sessions and the demo.
Flows only wire tasks together; the work happens in `streamlab`."""

"""Benchmarks: each script runs streamlab and its peer side by side in one process;
`python -m benchmarks` runs them all and rewrites README.md."""

"""streamlab: streaming online learning for neural recordings.

Frames arrive over ZeroMQ, online learners update on every sample with temporally local
rules, and their outputs and state are written to a Zarr store.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]

"""The package's error hierarchy: each error also subclasses the builtin it refines, and its
message says what was wrong and what to do about it."""

from __future__ import annotations


class StreamlabError(Exception):
    """Base class of every error streamlab raises on purpose."""


class ProtocolError(StreamlabError, ValueError):
    """A message on the wire broke the protocol; `code` names the rule, `detail` the case."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ConfigError(StreamlabError, ValueError):
    """A learner spec, CLI option or constructor argument is invalid."""


class InputShapeError(StreamlabError, ValueError):
    """A sample given to a learner has the wrong shape, dtype or contents."""


class StoreError(StreamlabError, OSError):
    """The Zarr store could not be created, written, read or resumed."""


class SessionError(StreamlabError, ValueError):
    """A recorded session file could not be read as a replayable session."""

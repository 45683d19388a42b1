"""Where a flow may write: store paths that arrive as flow parameters (from a deployment, an
API call, a schedule) are kept inside a configured root, so a parameter cannot point a run at
`../../etc` or another lab's data."""

from __future__ import annotations

import os
from pathlib import Path

from streamlab.errors import ConfigError

STORE_ROOT_ENV = "STREAMLAB_STORE_ROOT"


def confined_store(path: str, root: str | None = None) -> str:
    """`path` resolved inside `root` (default: $STREAMLAB_STORE_ROOT); without a root, `path`
    unchanged. A path that resolves outside the root (absolute elsewhere, `..`, a symlink out)
    is refused, naming the root."""
    root = root if root is not None else os.environ.get(STORE_ROOT_ENV)
    if not root:
        return path
    if "://" in path:
        raise ConfigError(
            f"store {path!r} is a URL but stores are confined to {root} ({STORE_ROOT_ENV}); "
            "give a path inside it"
        )
    base = Path(root).resolve()
    resolved = (base / path).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(
            f"store {path!r} resolves to {resolved}, outside the store root {base} "
            f"({STORE_ROOT_ENV}); give a path inside it"
        )
    return str(resolved)

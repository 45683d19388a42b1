"""Learner specs as the CLI and flows take them: `name` or `name:key=value,key=value`
(e.g. `sm:n_components=4`). Values are converted to the type of the constructor's default."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from streamlab.errors import ConfigError
from streamlab.learners.base import Learner
from streamlab.learners.control import AdaptiveKalmanDecoder, BioOFC, KalmanFilter
from streamlab.learners.similarity import SimilarityMatching

LEARNERS: dict[str, type[Learner]] = {
    "sm": SimilarityMatching,
    "kalman": KalmanFilter,
    "akd": AdaptiveKalmanDecoder,
    "bio_ofc": BioOFC,
}


@dataclass(frozen=True)
class LearnerSpec:
    """A parsed spec: the registry `kind`, the `name` used in the store, and constructor params."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> Learner:
        return LEARNERS[self.kind](**{**self.params, **overrides})

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())


def parse_spec(text: str) -> LearnerSpec:
    """Parse `name[:key=value,...]`; raises ConfigError naming the bad part and the valid ones."""
    kind, _, rest = text.strip().partition(":")
    if kind not in LEARNERS:
        raise ConfigError(
            f"unknown learner {kind!r} in spec {text!r}; known: {', '.join(sorted(LEARNERS))}"
        )
    signature = inspect.signature(LEARNERS[kind].__init__)
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"spec item {item!r} in {text!r} must look like key=value")
        if key not in signature.parameters or key == "self":
            valid = ", ".join(p for p in signature.parameters if p != "self")
            raise ConfigError(f"learner {kind!r} has no parameter {key!r}; its parameters: {valid}")
        params[key] = _convert(value.strip(), signature.parameters[key].default, key, kind)
    return LearnerSpec(kind, kind, params)


def _convert(value: str, default: Any, key: str, kind: str) -> Any:
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if default is None and value.lower() == "none":
            return None
        if default is None:
            try:
                return int(value)
            except ValueError:
                return value
    except ValueError:
        raise ConfigError(
            f"{kind}:{key}={value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


def build_learners(specs: list[str | LearnerSpec], **overrides: Any) -> dict[str, Learner]:
    """Build learners from specs, naming a second copy of the same kind `kind_2`, and so on."""
    learners: dict[str, Learner] = {}
    for spec in specs:
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        name, copy = parsed.name, 2
        while name in learners:
            name, copy = f"{parsed.name}_{copy}", copy + 1
        learners[name] = parsed.build(**overrides)
    return learners

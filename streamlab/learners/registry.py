"""Learner specs as the CLI and flows take them: `name` or `name:key=value,key=value`
(e.g. `sm:n_components=4`). Values are converted to the type of the constructor's default.

The key `y` is not a constructor parameter: it names the stream channels that a learner taking
`step(x, y)` gets as y (a behavioural target, a second view, a cost), joined by `+`, by the
names in the stream's hello or by index (`akd:y=vx+vy`, `bio_ofc:y=2`); the learner's x is
then the other channels."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from streamlab.errors import ConfigError
from streamlab.learners.base import Learner, TargetLearner
from streamlab.learners.control import AdaptiveKalmanDecoder, BioOFC, KalmanFilter
from streamlab.learners.glm import SwitchingGLM
from streamlab.learners.refh import RecurrentEFH
from streamlab.learners.reservoir import ForceReadout, SpikingReservoir, ThreeFactorReadout
from streamlab.learners.ridge import OnlineRidgeDecoder
from streamlab.learners.similarity import (
    BioCCA,
    NonnegativeSimilarityMatching,
    SimilarityMatching,
)

LEARNERS: dict[str, type[Learner]] = {
    "sm": SimilarityMatching,
    "nsm": NonnegativeSimilarityMatching,
    "biocca": BioCCA,
    "kalman": KalmanFilter,
    "akd": AdaptiveKalmanDecoder,
    "ridge": OnlineRidgeDecoder,
    "bio_ofc": BioOFC,
    "refh": RecurrentEFH,
    "reservoir": SpikingReservoir,
    "three_factor": ThreeFactorReadout,
    "force": ForceReadout,
    "sglm": SwitchingGLM,
}


@dataclass(frozen=True)
class LearnerSpec:
    """A parsed spec: the registry `kind`, the `name` used in the store, and constructor params."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    y: tuple[str, ...] = ()

    def build(self, **overrides: Any) -> Learner:
        return LEARNERS[self.kind](**{**self.params, **overrides})

    def __str__(self) -> str:
        items = [f"{k}={v}" for k, v in self.params.items()]
        if self.y:
            items.append("y=" + "+".join(self.y))
        return self.kind + (":" + ",".join(items) if items else "")


def parse_spec(text: str) -> LearnerSpec:
    """Parse `name[:key=value,...]`; raises ConfigError naming the bad part and the valid ones."""
    kind, _, rest = text.strip().partition(":")
    if kind not in LEARNERS:
        raise ConfigError(
            f"unknown learner {kind!r} in spec {text!r}; known: {', '.join(sorted(LEARNERS))}"
        )
    signature = inspect.signature(LEARNERS[kind].__init__)
    params: dict[str, Any] = {}
    y: tuple[str, ...] = ()
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"spec item {item!r} in {text!r} must look like key=value")
        if key == "y":
            if not issubclass(LEARNERS[kind], TargetLearner):
                raise ConfigError(
                    f"learner {kind!r} takes no y (it learns from x alone); drop y= from {text!r}"
                )
            y = tuple(c.strip() for c in value.split("+"))
            if not all(y):
                raise ConfigError(f"y={value!r} in {text!r}: give channel names joined by '+'")
            continue
        if key not in signature.parameters or key == "self":
            valid = ", ".join(p for p in signature.parameters if p != "self")
            raise ConfigError(f"learner {kind!r} has no parameter {key!r}; its parameters: {valid}")
        params[key] = _convert(value.strip(), signature.parameters[key].default, key, kind)
    return LearnerSpec(kind, kind, params, y)


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
            for number in (int, float):
                try:
                    return number(value)
                except ValueError:
                    pass
            return value
    except ValueError:
        raise ConfigError(
            f"{kind}:{key}={value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


def name_specs(specs: list[str | LearnerSpec]) -> dict[str, LearnerSpec]:
    """Specs by the name each learner gets in the store: a second copy of the same kind is
    `kind_2`, and so on."""
    named: dict[str, LearnerSpec] = {}
    for spec in specs:
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        name, copy = parsed.name, 2
        while name in named:
            name, copy = f"{parsed.name}_{copy}", copy + 1
        named[name] = parsed
    return named


def build_learners(specs: list[str | LearnerSpec], **overrides: Any) -> dict[str, Learner]:
    """Build learners from specs, named as `name_specs` names them."""
    return {name: spec.build(**overrides) for name, spec in name_specs(specs).items()}


def learner_targets(specs: list[str | LearnerSpec]) -> dict[str, tuple[str, ...]]:
    """The y channels of each learner that has them, by learner name (for `Pipeline`)."""
    return {name: spec.y for name, spec in name_specs(specs).items() if spec.y}

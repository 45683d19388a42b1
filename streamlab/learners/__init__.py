"""Online learners: river estimators with a fast tensor `step`. None of them knows about ZeroMQ,
Zarr or Prefect."""

from streamlab.learners.base import Learner, resolve_device
from streamlab.learners.registry import LEARNERS, LearnerSpec, build_learners, parse_spec
from streamlab.learners.similarity import SimilarityMatching

__all__ = [
    "LEARNERS",
    "Learner",
    "LearnerSpec",
    "SimilarityMatching",
    "build_learners",
    "parse_spec",
    "resolve_device",
]

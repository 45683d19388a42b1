"""Online learners: river estimators with a fast tensor `step`. None of them knows about ZeroMQ,
Zarr or Prefect."""

from streamlab.learners.base import Learner, resolve_device
from streamlab.learners.refh import RecurrentEFH
from streamlab.learners.registry import (
    LEARNERS,
    LearnerSpec,
    build_learners,
    learner_targets,
    parse_spec,
)
from streamlab.learners.similarity import (
    BioCCA,
    NonnegativeSimilarityMatching,
    SimilarityMatching,
)

__all__ = [
    "LEARNERS",
    "BioCCA",
    "Learner",
    "LearnerSpec",
    "NonnegativeSimilarityMatching",
    "RecurrentEFH",
    "SimilarityMatching",
    "build_learners",
    "learner_targets",
    "parse_spec",
    "resolve_device",
]

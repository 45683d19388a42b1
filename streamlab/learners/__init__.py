"""Online learners: river estimators with a fast tensor `step`. None of them knows about ZeroMQ,
Zarr or Prefect."""

from streamlab.learners.base import Learner, resolve_device
from streamlab.learners.glm import SwitchingGLM
from streamlab.learners.refh import RecurrentEFH
from streamlab.learners.registry import (
    LEARNERS,
    LearnerSpec,
    build_learners,
    learner_targets,
    parse_spec,
)
from streamlab.learners.reservoir import ForceReadout, SpikingReservoir, ThreeFactorReadout
from streamlab.learners.ridge import OnlineRidgeDecoder
from streamlab.learners.similarity import (
    BioCCA,
    NonnegativeSimilarityMatching,
    SimilarityMatching,
)

__all__ = [
    "LEARNERS",
    "BioCCA",
    "ForceReadout",
    "Learner",
    "LearnerSpec",
    "NonnegativeSimilarityMatching",
    "OnlineRidgeDecoder",
    "RecurrentEFH",
    "SimilarityMatching",
    "SpikingReservoir",
    "SwitchingGLM",
    "ThreeFactorReadout",
    "build_learners",
    "learner_targets",
    "parse_spec",
    "resolve_device",
]

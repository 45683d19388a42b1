"""river's own estimator checks, one pytest case per check, over every registered learner."""

from __future__ import annotations

import pytest
from river import checks

from streamlab.learners import LEARNERS


def _cases():
    for name, cls in sorted(LEARNERS.items()):
        for params in cls._unit_test_params():
            model = cls(**params)
            for check in checks.yield_checks(model):
                yield pytest.param(model, check, id=f"{name}-{check.__name__}")


@pytest.mark.parametrize(("model", "check"), list(_cases()))
def test_river_check(model, check) -> None:
    check(model.clone())


def test_a_nan_in_a_dict_sample_is_refused_and_learns_nothing() -> None:
    """The dict surface refuses a non-finite value, as the pipeline refuses a NaN frame; a NaN
    learned from had poisoned every later output."""
    import math

    from streamlab.errors import InputShapeError
    from streamlab.learners import SimilarityMatching

    learner = SimilarityMatching(n_components=2, device="cpu", seed=0)
    for i in range(20):
        learner.learn_one({"a": float(i % 3), "b": float(i % 5), "c": 1.0})
    before = learner.state_dict()
    with pytest.raises(InputShapeError, match=r"\['b'\] are not finite"):
        learner.learn_one({"a": 1.0, "b": math.nan, "c": 1.0})
    after = learner.state_dict()
    assert all(
        not hasattr(value, "equal") or value.equal(after[key]) for key, value in before.items()
    )
    out = learner.transform_one({"a": 1.0, "b": 2.0, "c": 1.0})
    assert all(math.isfinite(v) for v in out.values())

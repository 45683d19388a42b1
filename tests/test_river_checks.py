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

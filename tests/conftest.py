"""Shared test settings.

Hypothesis profiles: ``default`` keeps the property tests quick (the whole manifold suite runs in well
under a minute on two cores); ``thorough`` runs many more examples. Select one with the environment
variable ``HYPOTHESIS_PROFILE=thorough``. Deadlines are off: the first call of a torch op can be slow.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

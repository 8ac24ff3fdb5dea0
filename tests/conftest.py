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


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pretrained_cache(tmp_path_factory):
    """A pretrained-model cache in the layout ``benchmarks.run --cache`` reads, holding MERU and CLIP
    trained for a few hundred steps on the built-in ``shapes`` data (enough to know some concepts)."""
    import torch

    import models
    from benchmarks.common import EncodedDataset
    from benchmarks.datasets import load_dataset
    from benchmarks.experiment import pretrained_entry
    from benchmarks.pretrain import default_model, pretrain

    cache = tmp_path_factory.mktemp("pretrained")
    data = EncodedDataset.build(load_dataset("shapes"), 20)
    summaries = {}
    for geometry in ("lorentz", "euclidean"):
        torch.manual_seed(0)
        model = models.create_model(default_model(geometry))
        # Where the harness looks for the default model of this dataset (a shorter schedule here).
        entry = pretrained_entry(geometry, data, cache)
        summaries[geometry] = pretrain(
            model, data, steps=600, batch_size=128, lr=1e-3, warmup=50, seed=0,
            checkpoint=entry.path, metadata=entry.metadata(data), progress=False,
        )
    return cache, data, summaries

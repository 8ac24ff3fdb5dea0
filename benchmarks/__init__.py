"""Experiments on top of the library: datasets, pretraining, the forgetting benchmark, speed scripts."""

import manifolds  # noqa: F401  (first: it imports geoopt without its torch.jit.script notice)

"""Experiments on top of the library: datasets, pretraining, the forgetting benchmark, speed scripts."""

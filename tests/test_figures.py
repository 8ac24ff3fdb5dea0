"""Per-run figure names: readable for short forget sets, bounded for long ones."""

from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.experiment import RunSpec
from benchmarks.figures import MAX_SLUG, _save, figure_paths, slug

LONG_FORGET = tuple(f"{pattern}_{colour}_{outline}" for pattern in ("checked", "dotted", "plain", "striped")
                    for colour, outline in (("teal", "square"), ("white", "star"), ("black", "star"), ("green", "square")))
RECORD = {"after": {"alignment_matrix": [[0.0]]}}


def test_short_names_are_the_plain_slug():
    spec = RunSpec("lorentz", "hac", ("triangle",), 0)
    assert {kind: path.name for kind, path in figure_paths(Path("out"), spec, RECORD).items()} == {
        "embeddings": "embeddings-hac-lorentz-triangle.png", "dist0": "dist0-hac-lorentz-triangle.png",
        "alignment": "alignment-hac-lorentz-triangle.png"}


def test_sixteen_concepts_give_a_bounded_distinct_name_that_can_be_written(tmp_path):
    spec = RunSpec("lorentz", "hac", LONG_FORGET, 0)
    other = RunSpec("lorentz", "hac", LONG_FORGET[:-1] + ("striped_white_circle",), 0)
    path = figure_paths(tmp_path, spec, RECORD)["embeddings"]
    assert len(slug("-".join(LONG_FORGET))) == MAX_SLUG
    assert path.name.startswith("embeddings-hac-lorentz-checked-teal-square-")
    assert path.name != figure_paths(tmp_path, other, RECORD)["embeddings"].name
    _save(plt.figure(), path)  # the atomic write's temporary name must fit too
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]

"""Per-run figure names: readable for short forget sets, bounded for long ones."""

import hashlib
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.experiment import RunSpec
from benchmarks.common import MAX_NAME, bounded_name
from benchmarks.figures import _save, figure_paths, slug

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
    assert len(slug("-".join(LONG_FORGET))) <= MAX_NAME
    assert path.name.startswith("embeddings-hac-lorentz-checked-teal-square-")
    assert path.name != figure_paths(tmp_path, other, RECORD)["embeddings"].name
    _save(plt.figure(), path)  # the atomic write's temporary name must fit too
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_bounded_names_keep_short_names_and_tell_long_ones_apart():
    assert bounded_name("shapes-lorentz-triangle") == "shapes-lorentz-triangle"
    long_a, long_b = "taxonomy-lorentz-" + "+".join(LONG_FORGET), "taxonomy-lorentz-" + "+".join(LONG_FORGET[1:])
    assert len(bounded_name(long_a)) <= MAX_NAME and bounded_name(long_a) != bounded_name(long_b)
    assert bounded_name(long_a).startswith("taxonomy-lorentz-checked_teal_square+")
    assert bounded_name("x" * 50, limit=20) == "x" * 9 + "-" + hashlib.sha1(b"x" * 50).hexdigest()[:10]


def test_the_default_output_folder_of_many_concepts_is_bounded():
    from types import SimpleNamespace

    from benchmarks import run

    data = SimpleNamespace(dataset=SimpleNamespace(name="taxonomy"))
    assert run.default_out(run.parse_args(["--forget", "a,b"]), data).name == "taxonomy-lorentz-a+b"
    folder = run.default_out(run.parse_args(["--forget", ",".join(LONG_FORGET)]), data)
    assert len(folder.name) <= MAX_NAME and folder.name.startswith("taxonomy-lorentz-checked_teal_square+")

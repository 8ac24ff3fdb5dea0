"""Tests for WebDataset tar shards: reading by index, the converter, detection, workers, errors.

Every test writes its own tiny shards into a temp folder, with ``webdataset.TarWriter`` (the writer
open_clip's and MERU's data tools use) or with the project's converter.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import webdataset
from PIL import Image

from benchmarks.datasets import (
    ConceptDataset, DatasetError, TarMemberImages, detect_format, load_dataset, load_image_file, make_shapes,
    validate_images,
)
from benchmarks.datasets.to_webdataset import main as convert_main
from benchmarks.datasets.to_webdataset import write_webdataset
from benchmarks.fingerprints import dataset_fingerprint

ANIMALS = {"thing": None, "animal": "thing", "canine": "animal", "fox": "canine", "dog": "canine", "cat": "animal"}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}


def _image_bytes(colour: str, format: str = "JPEG", size=(24, 16)) -> bytes:
    """A solid-colour image file of ``size`` (width, height), encoded in ``format``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buffer, format=format)
    return buffer.getvalue()


def _sample(key: str, concepts, split="train", caption=None, colour="red", image="jpg") -> dict:
    """One webdataset sample (``TarWriter.write`` input) with a jpg (or other) image."""
    return {
        "__key__": key,
        image: _image_bytes(colour, {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(image, "JPEG")),
        "txt": (caption if caption is not None else f"a photo of {key}").encode("utf-8"),
        "json": json.dumps({"concepts": concepts, "split": split}).encode("utf-8"),
    }


def _write_shard(path: Path, samples: list[dict]) -> Path:
    with webdataset.TarWriter(str(path), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)
    return path


def _write_folder(root: Path, shards: list[list[dict]], hierarchy=ANIMALS) -> Path:
    root.mkdir(parents=True)
    (root / "hierarchy.json").write_text(json.dumps(hierarchy))
    for number, samples in enumerate(shards):
        _write_shard(root / f"shard-{number:06d}.tar", samples)
    return root


def _good_folder(root: Path) -> Path:
    return _write_folder(root, [
        [_sample("a", ["fox"]), _sample("b", ["dog"], "test", colour="green")],
        [_sample("c", ["cat", "fox"], colour="blue", image="png")],
    ])


# -- round trip ------------------------------------------------------------------------------------


def test_round_trip_from_shapes_keeps_every_field_and_pixel(tmp_path):
    source = make_shapes(seed=3, per_leaf_train=3, per_leaf_test=1)  # 48 pairs
    shards = write_webdataset(source, tmp_path / "wds", shard_size=10, progress=False)
    assert [p.name for p in shards] == [f"shard-{k:06d}.tar" for k in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wds"]  # the temporary folder was renamed
    assert detect_format(tmp_path / "wds") == "webdataset"
    loaded = load_dataset(tmp_path / "wds")
    assert loaded.captions == source.captions and loaded.labels == source.labels
    assert loaded.splits.tolist() == source.splits.tolist()
    assert loaded.pair_concepts == source.pair_concepts
    assert loaded.hierarchy == source.hierarchy
    for concept in source.hierarchy.concepts():  # "curved" has a display name the templates lack
        assert loaded.prompts(concept) == source.prompts(concept)
    for index in range(len(source)):
        assert torch.equal(loaded.load_pixels(index), source.load_pixels(index)), index
    assert loaded.image_path(0).endswith("shard-000000.tar:00000000.png")


def test_converting_image_files_copies_web_formats_and_reencodes_others(tmp_path):
    source_root = tmp_path / "files"
    (source_root / "imgs").mkdir(parents=True)
    (source_root / "imgs" / "a.jpg").write_bytes(_image_bytes("red", size=(30, 20)))
    Image.new("RGB", (20, 30), COLOURS["green"]).save(source_root / "imgs" / "b.bmp")
    (source_root / "hierarchy.json").write_text(json.dumps(ANIMALS))
    lines = [{"image": "imgs/a.jpg", "caption": "a fox", "concepts": ["fox", "cat"], "split": "train"},
             {"image": "imgs/b.bmp", "caption": "a dog", "concepts": ["dog"], "split": "test"}]
    (source_root / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    source = load_dataset(source_root, image_size=16)
    write_webdataset(source, tmp_path / "wds", progress=False)
    loaded = load_dataset(tmp_path / "wds", image_size=16)
    assert [Path(loaded.image_path(i)).name for i in range(2)] == ["shard-000000.tar:00000000.jpg",
                                                                  "shard-000000.tar:00000001.png"]
    raw = (tmp_path / "wds" / "shard-000000.tar").read_bytes()
    start = int(loaded.image_source.offsets[0])
    assert raw[start:start + int(loaded.image_source.sizes[0])] == (source_root / "imgs" / "a.jpg").read_bytes()
    assert loaded.pair_concepts == source.pair_concepts and loaded.labels == ["fox", "dog"]
    assert all(torch.equal(loaded.load_pixels(i), source.load_pixels(i)) for i in range(2))


def test_converter_cli_writes_a_folder_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "shapes-wds"
    assert convert_main(["shapes", str(out), "--shard-size", "7", "--no-progress",
                         "--option", "per_leaf_train=1", "--option", "per_leaf_test=0"]) == 0
    assert len(list(out.glob("*.tar"))) == 2 and len(load_dataset(out)) == 12
    capsys.readouterr()
    assert convert_main(["shapes", str(out), "--no-progress"]) == 2  # OUT exists
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and err.count("\n") == 1
    assert convert_main(["no-such-dataset", str(tmp_path / "x"), "--no-progress"]) == 2
    assert not (tmp_path / "x").exists()


def test_converter_removes_its_temporary_folder_on_failure(tmp_path):
    source = make_shapes(seed=0, per_leaf_train=1, per_leaf_test=0)
    bad = ConceptDataset("bad", source.hierarchy, source.captions, source.labels, source.splits, 32,
                         image_paths=[str(tmp_path / f"missing-{i}.png") for i in range(len(source))])
    with pytest.raises(DatasetError, match=r"cannot read image file .*missing-0\.png"):
        write_webdataset(bad, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- shards written by webdataset.TarWriter --------------------------------------------------------


def test_tarwriter_shards_with_jpg_members_and_dotted_keys(tmp_path):
    # webdataset keys a member by its name up to the first dot: "img.v1.jpg" is field "v1.jpg" of
    # sample "img", and is still its image (webdataset decodes by the last extension).
    root = _write_folder(tmp_path / "wds", [
        [_sample("img.v1", ["fox"]), _sample("other.x.y", ["cat", "dog"], "test", colour="green")],
        [_sample("plain", ["dog"], colour="blue", image="webp")],
    ])
    ds = load_dataset(root, image_size=8)
    assert len(ds) == 3 and ds.name == "wds"
    assert ds.captions == ["a photo of img.v1", "a photo of other.x.y", "a photo of plain"]
    assert ds.labels == ["fox", "cat", "dog"] and ds.splits.tolist() == ["train", "test", "train"]
    assert ds.pair_concepts[1] == {"cat", "dog", "canine", "animal", "thing"}
    assert ds.image_path(0) == f"{root / 'shard-000000.tar'}:img.v1.jpg"
    assert ds.image_path(1).endswith("shard-000000.tar:other.x.y.jpg")
    assert ds.image_path(2).endswith("shard-000001.tar:plain.webp")
    expected = load_image_file(io.BytesIO(_image_bytes("green")), 8).mul(255).round().to(torch.uint8)
    assert torch.equal(ds.load_pixels(1), expected)
    assert ds.load_pixels(2).shape == (3, 8, 8) and ds.templates[0] == "a photo of a {}."


def test_members_are_found_by_offset_without_reading_images(tmp_path):
    root = _good_folder(tmp_path / "wds")
    source = load_dataset(root).image_source
    assert isinstance(source, TarMemberImages) and len(source) == 3
    raw = (root / "shard-000001.tar").read_bytes()
    start, size = int(source.offsets[2]), int(source.sizes[2])
    assert raw[start:start + size] == _image_bytes("blue", "PNG")
    assert source.files() == [str(root / "shard-000000.tar"), str(root / "shard-000001.tar")]


# -- detection -------------------------------------------------------------------------------------


def test_detection_picks_webdataset_without_stealing_other_formats(tmp_path):
    wds = _good_folder(tmp_path / "wds")
    assert detect_format(wds) == "webdataset"
    (wds / "pairs.jsonl").write_text("")  # the folder format's marker wins
    assert detect_format(wds) == "folder"

    tree = tmp_path / "tree"  # an ImageFolder holding a stray archive stays an ImageFolder
    (tree / "fox").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tree / "fox" / "1.png")
    (tree / "hierarchy.json").write_text(json.dumps(ANIMALS))
    _write_shard(tree / "backup.tar", [_sample("a", ["fox"])])
    assert detect_format(tree) == "imagefolder"

    no_hierarchy = tmp_path / "bare"
    no_hierarchy.mkdir()
    _write_shard(no_hierarchy / "shard-000000.tar", [_sample("a", ["fox"])])
    with pytest.raises(DatasetError, match="cannot tell the format"):
        detect_format(no_hierarchy)


# -- processes: pickling and DataLoader workers ----------------------------------------------------


class _PixelsOf(torch.utils.data.Dataset):
    """A torch Dataset over ``dataset.load_pixels`` (module level, so spawned workers can import it)."""

    def __init__(self, dataset: ConceptDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset.load_pixels(index), os.getpid()


def test_load_pixels_in_dataloader_workers_equals_the_main_process(tmp_path):
    source = make_shapes(seed=1, per_leaf_train=1, per_leaf_test=1)  # 24 pairs
    write_webdataset(source, tmp_path / "wds", shard_size=5, progress=False)
    ds = load_dataset(tmp_path / "wds")
    expected = [ds.load_pixels(i) for i in range(len(ds))]  # opens shards in this process before forking
    loader = torch.utils.data.DataLoader(_PixelsOf(ds), batch_size=3, num_workers=2)
    seen, pids = {}, set()
    for indices, pixels, worker_pids in loader:
        seen.update(zip(indices.tolist(), pixels))
        pids.update(worker_pids.tolist())
    assert sorted(seen) == list(range(len(ds))) and os.getpid() not in pids and len(pids) == 2
    assert all(torch.equal(seen[i], expected[i]) for i in range(len(ds)))
    assert all(torch.equal(ds.load_pixels(i), expected[i]) for i in range(len(ds)))  # parent's handles intact


def test_a_forked_process_opens_its_own_shard_handles(tmp_path):
    # A handle inherited through fork shares its file position with the parent: the source must
    # notice the new process id and open its own (simulated here by changing the recorded pid).
    ds = load_dataset(_good_folder(tmp_path / "wds"), image_size=8)
    source = ds.image_source
    first = ds.load_pixels(0)
    inherited = source._handles[0]
    source._pid = -1  # what a forked child sees: the pid it recorded is its parent's
    assert torch.equal(ds.load_pixels(0), first)
    assert source._handles[0] is not inherited and inherited.closed and source._pid == os.getpid()


def test_a_pickled_dataset_still_reads(tmp_path):
    ds = load_dataset(_good_folder(tmp_path / "wds"), image_size=8)
    first = ds.load_pixels(2)  # a handle is open now; it must not travel
    state = ds.image_source.__getstate__()
    assert not {"_handles", "_lock", "_pid"} & set(state)
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy.load_pixels(2), first) and copy.captions == ds.captions
    assert dataset_fingerprint(copy) == dataset_fingerprint(ds)


# -- errors ----------------------------------------------------------------------------------------


def test_validate_images_names_a_corrupt_member(tmp_path):
    broken = _sample("b", ["dog"])
    broken["jpg"] = _image_bytes("green")[:40]  # truncated JPEG
    root = _write_folder(tmp_path / "wds", [[_sample("a", ["fox"]), broken, _sample("c", ["cat"])]])
    ds = load_dataset(root, image_size=8)
    with pytest.raises(DatasetError, match=r"1 of 3 image files cannot be decoded") as info:
        validate_images(ds, progress=False, workers=2)
    message = str(info.value)
    assert "shard-000000.tar:b.jpg" in message and "a.jpg" not in message and "\n" not in message
    with pytest.raises(DatasetError, match=r"cannot decode image file .*shard-000000\.tar:b\.jpg"):
        ds.load_pixels(1)
    validate_images(load_dataset(_good_folder(tmp_path / "good")), progress=False)


def _without(sample: dict, field: str) -> dict:
    return {k: v for k, v in sample.items() if k != field}


@pytest.mark.parametrize("samples, pattern", [
    ([_without(_sample("a", ["fox"]), "txt")], r"shard-000000\.tar: sample 'a': no caption member a\.txt"),
    ([_without(_sample("a", ["fox"]), "json")], r"shard-000000\.tar: sample 'a': no annotation member a\.json"),
    ([_without(_sample("a", ["fox"]), "jpg")], r"sample 'a': no image member a\.jpg\|jpeg\|png\|webp"),
    ([_sample("a", ["wolf"])], r"sample 'a': a\.json: concept\(s\) 'wolf' not in hierarchy\.json"),
    ([_sample("a", ["canine"])], r"a\.json: none of the concepts \['canine'\] is a leaf"),
    ([_sample("a", ["fox"], split="val")], r"a\.json: 'split' must be 'train' or 'test', got 'val'"),
    ([_sample("a", [])], r"a\.json: 'concepts' must be a non-empty list"),
    ([{**_sample("a", ["fox"]), "json": b'{"concepts": ["fox"]'}], r"a\.json: malformed JSON"),
    ([{**_sample("a", ["fox"]), "json": b'{"concepts": ["fox"]}'}], r"a\.json: missing key\(s\) split"),
    ([{**_sample("a", ["fox"]), "txt": "caf\xe9".encode("latin-1")}], r"a\.txt: byte 0xe9 .* not valid UTF-8"),
    ([_sample("x.1", ["fox"]), _sample("x.2", ["dog"])], r"sample 'x': 2 image members \(x\.1\.jpg, x\.2\.jpg\).*first dot"),
])
def test_bad_samples_are_named_in_one_line_errors(tmp_path, samples, pattern):
    root = _write_folder(tmp_path / "wds", [samples])
    with pytest.raises(DatasetError, match=pattern) as info:
        load_dataset(root)
    assert "\n" not in str(info.value)


def test_bad_shards_and_folders_are_named(tmp_path):
    root = _good_folder(tmp_path / "wds")
    (root / "shard-000001.tar").write_bytes(b"\x1f\x8b" + b"\0" * 600)  # not an uncompressed tar
    with pytest.raises(DatasetError, match=r"shard-000001\.tar: not a readable uncompressed tar file"):
        load_dataset(root)
    (root / "hierarchy.json").write_text('{"a": null, "b": null}')
    with pytest.raises(DatasetError, match=r"hierarchy\.json: .*exactly one root"):
        load_dataset(root)


def test_a_shard_truncated_after_opening_is_named_when_read(tmp_path):
    root = _write_folder(tmp_path / "wds", [[_sample("a", ["fox"]), _sample("b", ["dog"])]])
    ds = load_dataset(root, image_size=8)
    shard = root / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[: int(ds.image_source.offsets[1]) + 10])
    with pytest.raises(DatasetError, match=r"shard-000000\.tar:b\.jpg.*ends \d+ bytes early"):
        ds.load_pixels(1)


def test_exactly_one_image_store_is_accepted(tmp_path):
    ds = load_dataset(_good_folder(tmp_path / "wds"))
    pixels = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(DatasetError, match="exactly one of pixels"):
        ConceptDataset("x", ds.hierarchy, ds.captions, ds.labels, ds.splits, 4, pixels=pixels,
                       image_source=ds.image_source)
    with pytest.raises(DatasetError, match="2 captions but 3 images in the image source"):
        ConceptDataset("x", ds.hierarchy, ds.captions[:2], ds.labels[:2], ds.splits[:2], 4,
                       image_source=ds.image_source)


# -- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_changes_when_a_shard_is_rewritten(tmp_path):
    root = _good_folder(tmp_path / "wds")
    before = dataset_fingerprint(load_dataset(root))
    assert dataset_fingerprint(load_dataset(root)) == before  # reopening changes nothing
    shard = root / "shard-000000.tar"
    old = shard.stat()
    # Another image for "a"; captions, labels and member names stay as they were. The new mtime is
    # set explicitly (a rewrite a second later): the file system's clock tick plays no part.
    _write_shard(shard, [_sample("a", ["fox"], colour="blue"), _sample("b", ["dog"], "test", colour="green")])
    os.utime(shard, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
    assert dataset_fingerprint(load_dataset(root)) != before
    # Member names count too: same size and mtime, one key renamed (caption kept).
    _write_shard(shard, [_sample("a", ["fox"]), _sample("z", ["dog"], "test", caption="a photo of b", colour="green")])
    os.utime(shard, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert shard.stat().st_size == old.st_size
    assert dataset_fingerprint(load_dataset(root)) != before

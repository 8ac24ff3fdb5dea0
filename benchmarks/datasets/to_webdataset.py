"""Write any dataset the project can load as WebDataset tar shards + side files.

    python -m benchmarks.datasets.to_webdataset SOURCE OUT [--shard-size N] [--image-size S]
        [--seed K] [--option KEY=VALUE ...] [--no-progress]

``SOURCE`` is anything :func:`benchmarks.datasets.load_dataset` takes (``shapes``, ``digits``, a
folder, a COCO or ImageFolder tree, another WebDataset folder); ``--option`` passes reader options
(``--option per_leaf_train=100``; values are read as JSON when they parse, else as strings). ``OUT``
must not exist; it appears complete or not at all (written to a temporary folder beside it, then
renamed). The layout is the one ``webdataset.py`` reads:

- ``shard-000000.tar``, ... written with ``webdataset.ShardWriter``, ``--shard-size`` samples each;
  sample ``i`` has key ``%08d % i`` and members ``.png`` (or the source file's own ``.jpg``/``.jpeg``/
  ``.webp``/``.png`` bytes, copied unchanged), ``.txt`` (the caption) and ``.json`` (``concepts``: the
  label first, then the other most specific concepts of the pair; ``split``);
- ``hierarchy.json`` and ``prompts.json`` (the templates, plus explicit prompts for every concept whose
  prompts the templates alone would not give, e.g. one with a display name).

In-memory images (``shapes``, ``digits``, CIFAR) are stored as lossless PNG at their stored size
(read back at that ``image_size`` they are equal pixel for pixel; at another size they differ a
little, since in-memory images are resized by torch (bilinear) and files by PIL (bicubic));
image files in other formats (BMP, GIF, TIFF, ...) are re-encoded as PNG (first frame, upright, RGB
for CMYK/YCbCr). Pairs that share an image file (COCO's several captions) each get a copy: a
WebDataset sample holds its own image. Errors are one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from .base import ConceptDataset
from .errors import DatasetError
from .folder import HIERARCHY_FILE, PROMPTS_FILE
from .registry import load_dataset
from .text import fill_template
from .webdataset import IMAGE_EXTENSIONS

SHARD_NAME = "shard-%06d.tar"
DEFAULT_SHARD_SIZE = 1000
#: PIL modes PNG cannot hold, converted to RGB as the reader converts them anyway.
_RGB_ONLY_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV"})


def sample_concepts(dataset: ConceptDataset, index: int) -> list[str]:
    """The ``concepts`` of pair ``index``'s ``.json``: its label, then the other concepts of its set
    that are no ancestor of another (their closure is the pair's concept set again), sorted."""
    hierarchy, label = dataset.hierarchy, dataset.labels[index]
    concepts = dataset.pair_concepts[index]
    implied = {a for c in concepts for a in hierarchy.ancestors(c)} | {label}
    return [label] + sorted(concepts - implied)


def prompts_file(dataset: ConceptDataset) -> dict:
    """``prompts.json`` giving back ``dataset.prompts(c)`` for every concept ``c``: the templates,
    and the prompts of concepts that differ from the templates filled with the plain name."""
    explicit = {}
    for concept in dataset.hierarchy.concepts():
        prompts = dataset.prompts(concept)
        if prompts != [fill_template(t, concept.replace("_", " ")) for t in dataset.templates]:
            explicit[concept] = prompts
    return {"templates": list(dataset.templates), **({"prompts": explicit} if explicit else {})}


def _png_bytes(image) -> bytes:
    """A PIL image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _reencoded_png(data: bytes, name: str) -> bytes:
    """An image file in a format the layout does not list, as PNG (first frame, upright)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as source:
            image = ImageOps.exif_transpose(source)
            if image.mode in _RGB_ONLY_MODES:
                image = image.convert("RGB")
            return _png_bytes(image)
    except Exception as exc:  # corrupt files make PIL raise OSError, SyntaxError, ValueError, ...
        raise DatasetError(f"cannot re-encode image file {name!r} as PNG: {type(exc).__name__}: {exc}") from None


def encoded_image(dataset: ConceptDataset, index: int) -> tuple[str, bytes]:
    """``(extension, bytes)`` of the image member of pair ``index``."""
    from PIL import Image

    if dataset.pixels is not None:  # uint8 (n, 3, s, s) as stored
        return "png", _png_bytes(Image.fromarray(dataset.pixels[index].permute(1, 2, 0).numpy()))
    name = dataset.image_path(index)
    extension = Path(name).suffix.lower().lstrip(".")
    try:
        if dataset.image_source is not None:
            with dataset.image_source.open(index) as file:
                data = file.read()
        else:
            data = Path(name).read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read image file {name!r}: {exc.strerror or exc}") from None
    if extension in IMAGE_EXTENSIONS:
        return extension, data
    return "png", _reencoded_png(data, name)


def _sample(dataset: ConceptDataset, index: int) -> dict:
    extension, image = encoded_image(dataset, index)
    annotation = {"concepts": sample_concepts(dataset, index), "split": str(dataset.splits[index])}
    return {
        "__key__": f"{index:08d}",
        extension: image,
        "txt": dataset.captions[index].encode("utf-8"),
        "json": json.dumps(annotation, ensure_ascii=False).encode("utf-8"),
    }


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _new_folder_beside(out: Path) -> Path:
    """An empty temporary folder next to ``out`` (same file system, so renaming it is atomic),
    with the permissions a plain ``mkdir`` would give (``mkdtemp`` makes it private)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def write_webdataset(dataset: ConceptDataset, out: str | os.PathLike, *, shard_size: int = DEFAULT_SHARD_SIZE,
                     progress: bool = True) -> list[Path]:
    """Write ``dataset`` as a WebDataset folder ``out`` (which must not exist); returns the shards.

    The folder is written under a temporary name beside ``out`` and renamed when complete; on any
    error the temporary folder is removed and nothing appears at ``out``.
    """
    from webdataset import ShardWriter

    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise DatasetError(f"shard size must be a positive integer, got {shard_size!r}")
    out = Path(out)
    if out.exists():
        raise DatasetError(f"output folder {str(out)!r} already exists; give a new path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_folder_beside(out)
    try:
        _write_json(tmp / HIERARCHY_FILE, dataset.hierarchy.as_dict())
        _write_json(tmp / PROMPTS_FILE, prompts_file(dataset))
        pattern = str(tmp).replace("%", "%%") + os.sep + SHARD_NAME  # a literal % in the folder's path
        # A whole-second mtime: TarWriter's default, time.time(), is a float, for which tarfile adds
        # a PAX header (1 KiB) to every member, doubling small shards and their scan time.
        writer = ShardWriter(pattern, maxcount=shard_size, verbose=0, encoder=False, mtime=int(time.time()))
        try:
            pairs = tqdm(range(len(dataset)), desc=f"writing {dataset.name} shards", unit="pair", disable=not progress)
            for index in pairs:
                writer.write(_sample(dataset, index))
        finally:
            writer.close()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out.glob("*.tar"))


def _parsed_options(options: list[str]) -> dict:
    """``["per_leaf_train=100", "images_dir=imgs"]`` -> ``{"per_leaf_train": 100, "images_dir": "imgs"}``."""
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise DatasetError(f"--option {option!r}: expected KEY=VALUE, e.g. per_leaf_train=100")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datasets.to_webdataset",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a built-in name (shapes, digits) or a dataset folder")
    parser.add_argument("out", help="the WebDataset folder to write (must not exist)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                        help="samples per shard (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="image size of generated data; files keep their own size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated data and derived splits (default: 0)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a reader option, e.g. per_leaf_train=100 (repeatable)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        dataset = load_dataset(args.source, seed=args.seed, image_size=args.image_size, **_parsed_options(args.option))
        shards = write_webdataset(dataset, args.out, shard_size=args.shard_size, progress=not args.no_progress)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"wrote {len(dataset)} pairs in {len(shards)} shard(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

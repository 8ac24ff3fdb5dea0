"""WebDataset tar shards, the layout open_clip and MERU train on, read by index without extracting.

::

    mydata/
      shard-000000.tar     samples, each three consecutive members with the same key:
                             <key>.jpg|jpeg|png|webp   the image
                             <key>.txt                 the caption (UTF-8)
                             <key>.json                {"concepts": ["fox"], "split": "train"}
      shard-000001.tar     ...
      hierarchy.json       child -> parent, as in the folder format (``folder.py``)
      prompts.json         optional, as in the folder format

Members are grouped into samples exactly as the ``webdataset`` package groups them
(``webdataset.tariterators.group_by_keys``): a member's key is its name up to the first dot of its
last path component (``base_plus_ext``), the rest is its field name, lower-cased, and consecutive
members with the same key form one sample. A field is recognised by its last extension, as the
package's decoders do, so ``a.b.jpg`` is the image of sample ``a`` (field ``b.jpg``); two keys that
agree up to their first dot (``a.b``, ``a.c``) are one sample to webdataset, and are refused here.
Other fields (``.cls``, ``.npy``, ...) and webdataset's ``__meta__`` members are ignored.

The ``.json`` member follows the rules of a ``pairs.jsonl`` line of the folder format: ``concepts``
names concepts of ``hierarchy.json`` and its first leaf is the pair's label; ``split`` is ``"train"``
or ``"test"``; other keys (img2dataset's ``url``, ...) are ignored.

Random access: opening the folder scans every shard once, reading the tar headers and the small
``.txt``/``.json`` members; image members are recorded by offset and size (:class:`TarMemberImages`)
and read by seeking into the shard when :meth:`ConceptDataset.load_pixels` asks for them. Shards
must therefore be uncompressed ``.tar`` files. Shards are read in name order and the samples of a
shard in their order in it, so pair ``i`` is the ``i``-th sample of the folder.

``python -m benchmarks.datasets.to_webdataset SOURCE OUT`` writes any dataset in this layout.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import ConceptDataset
from .errors import DatasetError
from .folder import (DEFAULT_TEMPLATES, HIERARCHY_FILE, PROMPTS_FILE, checked_concepts_and_split, read_hierarchy_file,
                     read_prompts_file)
from .imagefolder import looks_like_imagefolder
from .registry import register_format

SHARD_PATTERN = "*.tar"
#: Image fields, by last extension: what open_clip reads (``"jpg;png;jpeg;webp"``).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSION = "txt"
ANNOTATION_EXTENSION = "json"
#: Shards a process keeps open at once; the least recently read is closed first. A folder of
#: thousands of shards would otherwise exhaust the open-file limit (often 1024) of each worker.
MAX_OPEN_SHARDS = 16


class TarMemberImages:
    """Images stored as members of uncompressed tar files, read by seeking to their bytes.

    An :class:`~benchmarks.datasets.base.ImageSource`: image ``i`` is ``sizes[i]`` bytes at byte
    ``offsets[i]`` of shard ``shards[shard_of[i]]``, named ``members[i]`` in it. File handles are
    opened lazily in each process (at most :data:`MAX_OPEN_SHARDS`), never pickled and never used
    across a fork: a child process opens its own, since a handle shared with the parent would share
    its file position. A lock serialises seek-and-read within a process (``validate_images`` reads
    from threads); decoding happens outside it.
    """

    def __init__(self, shards: Sequence[str | os.PathLike], shard_of: Sequence[int], offsets: Sequence[int],
                 sizes: Sequence[int], members: Sequence[str]):
        self.shards: tuple[str, ...] = tuple(os.fspath(s) for s in shards)
        self.shard_of = np.asarray(shard_of, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.members: list[str] = [str(m) for m in members]
        lengths = {len(self.shard_of), len(self.offsets), len(self.sizes), len(self.members)}
        if len(lengths) != 1:
            raise DatasetError(f"TarMemberImages: shard_of, offsets, sizes and members must have one entry "
                               f"per image, got lengths {sorted(lengths)}")
        if len(self.shard_of) and (self.shard_of.min() < 0 or self.shard_of.max() >= len(self.shards)):
            raise DatasetError(f"TarMemberImages: shard_of must index the {len(self.shards)} shards")
        self._start_process()

    def _start_process(self) -> None:
        """Forget the handles of another process (the parent, after a fork) and start afresh."""
        inherited = getattr(self, "_handles", {})
        for handle in inherited.values():
            handle.close()  # closes this process's copy of the descriptor; the parent's stays open
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._handles: OrderedDict[int, io.BufferedReader] = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("_pid", "_lock", "_handles"):
            del state[name]  # per-process: a lock and open files cannot travel
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_process()

    def __len__(self) -> int:
        return len(self.members)

    def describe(self, index: int) -> str:
        """``"<shard path>:<member name>"`` of image ``index``."""
        return f"{self.shards[self.shard_of[index]]}:{self.members[index]}"

    def files(self) -> list[str]:
        """The shard paths."""
        return list(self.shards)

    def open(self, index: int) -> io.BytesIO:
        """The encoded bytes of image ``index`` as an in-memory binary file (read now, in full)."""
        index = int(index)
        shard_no, offset, size = int(self.shard_of[index]), int(self.offsets[index]), int(self.sizes[index])
        try:
            data = self._read(shard_no, offset, size)
        except OSError as exc:
            raise DatasetError(f"cannot read image {self.describe(index)!r}: {exc.strerror or exc}") from None
        if len(data) != size:
            raise DatasetError(
                f"cannot read image {self.describe(index)!r}: the shard ends {size - len(data)} bytes "
                f"early; it was truncated or rewritten after the folder was opened"
            )
        return io.BytesIO(data)

    def _read(self, shard_no: int, offset: int, size: int) -> bytes:
        if os.getpid() != self._pid:  # a forked child: the handles belong to the parent
            self._start_process()
        with self._lock:
            handle = self._handle(shard_no)
            handle.seek(offset)
            return handle.read(size)

    def _handle(self, shard_no: int) -> io.BufferedReader:
        """The open handle of shard ``shard_no`` in this process (called under the lock)."""
        if shard_no in self._handles:
            self._handles.move_to_end(shard_no)
            return self._handles[shard_no]
        if len(self._handles) >= MAX_OPEN_SHARDS:
            _, oldest = self._handles.popitem(last=False)
            oldest.close()
        handle = self._handles[shard_no] = open(self.shards[shard_no], "rb")
        return handle

    def close(self) -> None:
        """Close this process's open shards (they reopen when read again)."""
        with self._lock:
            while self._handles:
                self._handles.popitem()[1].close()

    def __repr__(self) -> str:
        return f"TarMemberImages(shards={len(self.shards)}, images={len(self)})"


# -- scanning a shard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    """A regular member of a shard: where its bytes are, and the bytes of a text member."""

    name: str
    offset: int
    size: int
    data: bytes | None  # read for .txt and .json members only


def _last_extension(field: str) -> str:
    """``"jpg"`` for the fields ``"jpg"`` and ``"b.jpg"`` (webdataset decodes by the last one)."""
    return field.rsplit(".", 1)[-1]


@functools.cache
def _webdataset_meta_rule() -> tuple[str, str, re.Pattern | None]:
    """``(prefix, suffix, skip_meta)``: how ``webdataset.tariterators.tar_file_iterator`` recognises
    the metadata members it drops, taken from the package itself."""
    from webdataset import tariterators

    skip_meta = inspect.signature(tariterators.tar_file_iterator).parameters["skip_meta"].default
    return tariterators.meta_prefix, tariterators.meta_suffix, re.compile(skip_meta) if skip_meta else None


def _skipped_by_webdataset(name: str) -> bool:
    """Whether ``tar_file_iterator`` drops a member with this name (``__meta__``-style names)."""
    prefix, suffix, skip_meta = _webdataset_meta_rule()
    top_level_meta = "/" not in name and name.startswith(prefix) and name.endswith(suffix)
    return top_level_meta or (skip_meta is not None and skip_meta.match(name) is not None)


def _members(tar: tarfile.TarFile, shard: str) -> Iterator[dict]:
    """The members of an open shard as the records ``group_by_keys`` groups, in tar order."""
    for info in tar:
        if not info.isreg() or _skipped_by_webdataset(info.name):
            continue
        extension = _last_extension(info.name).lower()
        data = None
        if extension in (CAPTION_EXTENSION, ANNOTATION_EXTENSION):
            data = tar.extractfile(info).read()
        yield {"fname": info.name, "data": _Member(info.name, info.offset_data, info.size, data), "__url__": shard}


def scan_shard(shard: str | os.PathLike) -> list[dict]:
    """The samples of one shard as webdataset groups them, reading no image bytes.

    Each sample is a dict ``{"__key__": key, "__url__": shard, field: _Member, ...}``.
    """
    from webdataset.tariterators import group_by_keys

    shard = os.fspath(shard)
    try:
        with tarfile.open(shard, mode="r:") as tar:  # "r:": uncompressed only, so members can be sought
            return list(group_by_keys(_members(tar, shard)))
    except DatasetError:
        raise
    except tarfile.ReadError as exc:
        raise DatasetError(f"{shard}: not a readable uncompressed tar file ({exc}); shards must be plain "
                           f".tar files") from None
    except OSError as exc:
        raise DatasetError(f"cannot read shard {shard!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # group_by_keys: a field repeats within one sample
        raise DatasetError(
            f"{shard}: {exc.args[0]}; webdataset joins consecutive members whose names agree up to "
            f"the first dot into one sample, so each sample needs distinct extensions"
        ) from None


# -- one sample as a pair --------------------------------------------------------------------------


def _only_field(fields: dict, extensions: tuple[str, ...], what: str, where: str, key: str) -> _Member:
    """The one member of a sample whose last extension is in ``extensions``."""
    found = [member for field, member in fields.items() if _last_extension(field) in extensions]
    expected = "|".join(extensions)
    if not found:
        present = ", ".join(sorted(m.name for m in fields.values())) or "nothing"
        raise DatasetError(
            f"{where}: no {what} member {key}.{expected} (the sample has {present}); each sample needs "
            f"<key>.jpg|jpeg|png|webp, <key>.txt and <key>.json as consecutive members"
        )
    if len(found) > 1:
        raise DatasetError(
            f"{where}: {len(found)} {what} members ({', '.join(m.name for m in found)}); webdataset joins "
            f"consecutive members whose names agree up to the first dot, so keys must differ before it"
        )
    return found[0]


def _decoded_text(member: _Member, where: str) -> str:
    try:
        return member.data.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{where}: {member.name}: byte {exc.object[exc.start]:#04x} at position {exc.start} is not "
            f"valid UTF-8; the member must be UTF-8"
        ) from None


def _annotation(member: _Member, where: str, hierarchy) -> tuple[list[str], str, str]:
    """``(concepts, label, split)`` from a sample's ``.json`` member, by the folder format's rules."""
    where = f"{where}: {member.name}"
    required = ("concepts", "split")
    try:
        record = json.loads(_decoded_text(member, where))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object with keys {', '.join(required)}")
    missing = [k for k in required if k not in record]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {', '.join(missing)} (each sample's .json needs {', '.join(required)})")
    return checked_concepts_and_split(record["concepts"], record["split"], hierarchy, where)


@dataclass(frozen=True)
class _Pair:
    caption: str
    concepts: list[str]
    label: str
    split: str
    image: _Member


def _pair(sample: dict, hierarchy) -> _Pair:
    """The pair a grouped sample holds; a missing or ambiguous member raises :class:`DatasetError`."""
    key = sample["__key__"]
    where = f"{sample['__url__']}: sample {key!r}"
    fields = {field: member for field, member in sample.items() if not field.startswith("__")}
    image = _only_field(fields, IMAGE_EXTENSIONS, "image", where, key)
    caption = _decoded_text(_only_field(fields, (CAPTION_EXTENSION,), "caption", where, key), where)
    concepts, label, split = _annotation(_only_field(fields, (ANNOTATION_EXTENSION,), "annotation", where, key),
                                         where, hierarchy)
    return _Pair(caption, concepts, label, split, image)


# -- the folder ------------------------------------------------------------------------------------


def shard_paths(root: Path) -> list[Path]:
    """The ``*.tar`` files directly in ``root``, sorted by name."""
    return sorted(p for p in root.glob(SHARD_PATTERN) if p.is_file())


def has_tar_shards(root: Path) -> bool:
    """Whether ``root`` holds ``hierarchy.json`` and ``*.tar`` shards, and no class sub-folder of
    images: an ImageFolder tree with its optional ``hierarchy.json`` and a stray archive (a backup
    of its images) stays an ImageFolder."""
    if not (root / HIERARCHY_FILE).is_file() or not any(p.is_file() for p in root.glob(SHARD_PATTERN)):
        return False
    return not looks_like_imagefolder(root)


# Priority 0: after the folder format, CIFAR-100 and COCO (their marker files win), before the
# ImageFolder catch-all, which the detector above leaves its trees to.
@register_format("webdataset", detect=has_tar_shards, layout=f"{SHARD_PATTERN} shards + {HIERARCHY_FILE}",
                 title="WebDataset")
def load_webdataset(path: str | os.PathLike, image_size: int = 32) -> ConceptDataset:
    """Read a folder of WebDataset tar shards + ``hierarchy.json`` [+ ``prompts.json``].

    Every shard is scanned once here (headers, captions and annotations); images are read from the
    shards by offset when asked for, never extracted.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    needs = f"a WebDataset folder needs {SHARD_PATTERN} shards and {HIERARCHY_FILE}"
    hierarchy_path = root / HIERARCHY_FILE
    if not hierarchy_path.is_file():
        raise DatasetError(f"missing file {str(hierarchy_path)!r}; {needs}")
    shards = shard_paths(root)
    if not shards:
        raise DatasetError(f"{str(root)!r} holds no {SHARD_PATTERN} shards; {needs}")
    hierarchy = read_hierarchy_file(hierarchy_path)
    templates, prompts = read_prompts_file(root / PROMPTS_FILE, hierarchy)

    pairs: list[_Pair] = []
    shard_of: list[int] = []
    for shard_no, shard in enumerate(shards):
        shard_pairs = [_pair(sample, hierarchy) for sample in scan_shard(shard)]
        _check_distinct_images(shard, shard_pairs)
        pairs += shard_pairs
        shard_of += [shard_no] * len(shard_pairs)
    if not pairs:
        raise DatasetError(f"{str(root)!r}: the shards hold no samples; expected <key>.jpg + <key>.txt + "
                           f"<key>.json members")

    images = TarMemberImages(shards, shard_of, [p.image.offset for p in pairs], [p.image.size for p in pairs],
                             [p.image.name for p in pairs])
    return ConceptDataset(
        name=root.resolve().name,
        hierarchy=hierarchy,
        captions=[p.caption for p in pairs],
        labels=[p.label for p in pairs],
        splits=[p.split for p in pairs],
        image_size=image_size,
        image_source=images,
        pair_concepts=[p.concepts for p in pairs],
        templates=templates or DEFAULT_TEMPLATES,
        prompts=prompts,
    )


def _check_distinct_images(shard: Path, pairs: list[_Pair]) -> None:
    """A member name used twice in one shard (legal in tar) would make two pairs seem to share an
    image (``image_path`` identifies images by shard and member name)."""
    seen: set[str] = set()
    for pair in pairs:
        if pair.image.name in seen:
            raise DatasetError(f"{shard}: member {pair.image.name!r} appears twice; every sample needs its own key")
        seen.add(pair.image.name)

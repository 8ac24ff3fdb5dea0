"""Image files and in-memory pixels as model input: square float tensors in [0, 1].

Every PIL mode is mapped to RGB by what its values mean (16/32-bit and float greyscale by their bit
depth, transparency over white), the EXIF orientation is applied and multi-frame files give their
first frame. PIL is imported only when a file is decoded, so built-in data never needs it.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetError

#: Transparent pixels are composited over white: images with transparency (logos, icons, cut-out
#: product photos) are mostly made to be shown on a white page, where they look as intended.
TRANSPARENT_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _is_high_bit_grey(mode: str) -> bool:
    """Whether PIL ``mode`` holds greyscale beyond 8 bits: 16/32-bit integers or 32-bit floats."""
    return mode in ("I", "F") or mode.startswith("I;16")


def _declared_bits(img) -> int | None:
    """Bits per sample a TIFF declares (12-bit camera data is stored in 16-bit modes), else ``None``."""
    bits = getattr(img, "tag_v2", {}).get(258)  # 258: TIFF BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if bits else None


def _grey_unit_range(img, declared_bits: int | None) -> np.ndarray:
    """A 16/32-bit integer or float greyscale image as float32 ``(h, w)`` in [0, 1].

    Integers are divided by the full scale of their bit depth: the TIFF's declared depth, else 16
    bits for ``I;16*`` modes and for ``I`` values within 0..65535 (a 16-bit PNG or PGM), else 31
    bits (``I`` holds signed 32-bit integers). Floats within [0, 1] are taken as they are; other
    floats are on PIL's own 0..255 scale (what ``convert("F")`` of an 8-bit image gives).
    """
    values = np.asarray(img).astype(np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)  # no brightness to give them
    if img.mode == "F":
        full_scale = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    elif declared_bits:
        full_scale = 2.0 ** min(declared_bits, 31) - 1
    elif img.mode.startswith("I;16") or values.max(initial=0.0) <= 65535:
        full_scale = 65535.0
    else:
        full_scale = 2.0 ** 31 - 1
    # Negative values (signed data) are darker than black and floats past full scale brighter
    # than white; a display shows both at its limits.
    return np.clip(values / full_scale, 0.0, 1.0)


def _rgb_or_unit_grey(img, declared_bits: int | None):
    """``img`` as a PIL image of mode ``"RGB"`` (8-bit) or ``"F"`` (high-bit greyscale in [0, 1])."""
    from PIL import Image

    if _is_high_bit_grey(img.mode):
        return Image.fromarray(_grey_unit_range(img, declared_bits))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:  # "P", "L", "RGB" may name a transparent colour
        background = Image.new("RGBA", img.size, TRANSPARENT_BACKGROUND + (255,))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")  # "1", "L", "P", "CMYK" (no ICC colour management), "YCbCr", ...


def _centre_square(img, image_size: int):
    """Resize the shorter side of a PIL image to ``image_size`` (bicubic) and crop the centre square."""
    from PIL import Image

    width, height = img.size
    scale = image_size / min(width, height)
    new_w, new_h = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)  # PIL antialiases when shrinking
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def load_image_file(path: str | os.PathLike | BinaryIO, image_size: int, *, name: str | None = None) -> torch.Tensor:
    """Decode an image file as a float tensor ``(3, image_size, image_size)`` in [0, 1].

    ``path`` is a file path or a readable binary file object positioned at the encoded image (a
    member of a tar shard, ...); ``name`` says what it is in error messages (default: the path, or
    the file object's ``name``).

    Every PIL mode is mapped to RGB by what its values mean:

    - 8-bit modes (``"1"``, ``"L"``, ``"P"``, ``"RGB"``, ``"CMYK"``, ``"YCbCr"``): PIL's conversion
      to RGB (CMYK without ICC colour management), divided by 255;
    - transparency (``"RGBA"``, ``"LA"``, ``"PA"``, or a transparent palette/grey/RGB colour):
      composited over white (:data:`TRANSPARENT_BACKGROUND`);
    - 16/32-bit integer and float greyscale (``"I;16*"``, ``"I"``, ``"F"``): scaled by the file's
      real bit depth (see :func:`_grey_unit_range`), not clipped, and copied to the 3 channels.

    The EXIF orientation is applied; multi-frame files (GIF, TIFF, ...) give their first frame. The
    shorter side is resized to ``image_size`` (bicubic, antialiased) and the centre cropped.
    A missing or undecodable file raises :class:`DatasetError` naming it.
    """
    from PIL import Image, ImageOps  # local import: PIL is only needed for file-based datasets

    if name is None:
        name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(getattr(path, "name", "<file object>"))
    try:
        with Image.open(path) as source:  # positioned at the first frame
            source.draft(None, (image_size, image_size))  # JPEG: decode at a reduced scale, >= the size
            upright = ImageOps.exif_transpose(source)
            img = _centre_square(_rgb_or_unit_grey(upright, _declared_bits(source)), image_size)
    except FileNotFoundError:
        raise DatasetError(f"image file {name!r} does not exist") from None
    except Exception as exc:  # corrupt files make PIL raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DatasetError(f"cannot decode image file {name!r}: {type(exc).__name__}: {exc}") from None
    if img.mode == "RGB":
        array = np.asarray(img, dtype=np.float32) / 255.0
    else:  # unit-range greyscale; bicubic resizing overshoots [0, 1] next to sharp edges
        array = np.repeat(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def resize_square(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize a batch of square uint8 images ``(n, 3, s, s)`` to ``image_size`` (bilinear, antialiased)."""
    if pixels.shape[-1] == image_size and pixels.shape[-2] == image_size:
        return pixels.float().div_(255.0)
    out = F.interpolate(
        pixels.float(), size=(image_size, image_size), mode="bilinear",
        align_corners=False, antialias=image_size < pixels.shape[-1],
    )
    return out.clamp_(0.0, 255.0).div_(255.0)

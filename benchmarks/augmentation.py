"""Image augmentation for image–text pretraining: random resized crops and brightness/contrast.

Why these and nothing else: captions of the built-in data (and of most image–text corpora) name
colours, positions and characters, so hue changes and flips would make captions false; a crop that
keeps most of the object, and a moderate change of light and contrast, keep every caption true and
stop a small model from memorising its training pairs pixel by pixel (docs/SPEC.md section 2.1).

The parameters of a step are drawn for the whole *global* batch from a generator seeded with the
run's seed and the step number, then each process takes its slice: a run is the same whatever the
number of processes or data-loader workers, and a resumed run redraws them from the step alone.

>>> augmentation = Augmentation()
>>> images = augmentation.apply(images, augmentation.draw(len(images), seed=0, step=12))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

# Mixes the step into the seed of its generator (a large odd constant: distinct steps of
# distinct runs never share a generator in practice).
_STEP_STRIDE = 1_000_003


@dataclass(frozen=True)
class Augmentation:
    """Random resized crop (area share in ``[min_area, 1]``, aspect ratio within ``max_aspect``×)
    followed by brightness and contrast factors in ``[1 - brightness, 1 + brightness]`` and
    ``[1 - contrast, 1 + contrast]``. ``Augmentation(min_area=1, brightness=0, contrast=0)``
    leaves images unchanged up to bilinear resampling at the identity."""

    min_area: float = 0.7
    max_aspect: float = 4 / 3
    brightness: float = 0.2
    contrast: float = 0.2

    def __post_init__(self):
        if not 0 < self.min_area <= 1:
            raise ValueError(f"augmentation min_area must be in (0, 1], got {self.min_area}")
        if not self.max_aspect >= 1:
            raise ValueError(f"augmentation max_aspect must be at least 1, got {self.max_aspect}")
        for name in ("brightness", "contrast"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"augmentation {name} must be in [0, 1), got {getattr(self, name)}")

    def as_dict(self) -> dict:
        return asdict(self)

    def draw(self, count: int, *, seed: int, step: int) -> torch.Tensor:
        """The parameters of ``count`` images at ``step``: ``(count, 6)`` float32 on the CPU, rows
        ``(width, height, x offset, y offset, brightness, contrast)``; width and height are the
        crop's sides as shares of the image's, offsets its centre in ``[-1, 1]`` coordinates."""
        generator = torch.Generator().manual_seed(seed * _STEP_STRIDE + step)
        uniform = torch.rand(count, 6, generator=generator, dtype=torch.float64)
        area = self.min_area + (1 - self.min_area) * uniform[:, 0]
        log_aspect = math.log(self.max_aspect) * (2 * uniform[:, 1] - 1)
        # A crop side above 1 would sample outside the image: the aspect ratio gives way instead.
        width = (area.sqrt() * (log_aspect / 2).exp()).clamp(max=1.0)
        height = (area.sqrt() * (-log_aspect / 2).exp()).clamp(max=1.0)
        x_offset = (1 - width) * (2 * uniform[:, 2] - 1)
        y_offset = (1 - height) * (2 * uniform[:, 3] - 1)
        brightness = 1 + self.brightness * (2 * uniform[:, 4] - 1)
        contrast = 1 + self.contrast * (2 * uniform[:, 5] - 1)
        return torch.stack([width, height, x_offset, y_offset, brightness, contrast], dim=1).float()

    @staticmethod
    def apply(images: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        """Augment ``images`` ``(n, 3, H, W)`` in ``[0, 1]`` with ``parameters`` ``(n, 6)`` from
        :meth:`draw` (moved to the images' device): crop and resize back to ``H × W`` bilinearly,
        then ``x ← clamp(c·(b·x − m) + m, 0, 1)`` with ``m`` the image's mean after brightness."""
        parameters = parameters.to(images.device, images.dtype)
        width, height, x_offset, y_offset, brightness, contrast = parameters.unbind(dim=1)
        zeros = torch.zeros_like(width)
        theta = torch.stack([torch.stack([width, zeros, x_offset], dim=1),
                             torch.stack([zeros, height, y_offset], dim=1)], dim=1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        cropped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        lit = cropped * brightness.view(-1, 1, 1, 1)
        mean = lit.mean(dim=(1, 2, 3), keepdim=True)
        # Brightness above 1 and contrast push bright pixels past 1: keep the range the model's
        # normalisation expects (a saturated pixel, as a camera would record it).
        return ((lit - mean) * contrast.view(-1, 1, 1, 1) + mean).clamp(0.0, 1.0)

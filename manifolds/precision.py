"""Run geometry in float32 (or float64) even inside mixed-precision regions.

The one precision helper of the project: geometry methods are decorated with
:func:`full_precision`; code above the geometry (the model's scaling and lifting, its logits) wraps
its own full-precision regions in :func:`autocast_off` and upcasts with :func:`upcast`."""

from __future__ import annotations

import contextlib
import functools

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(value):
    """``value`` as float32 when it is a half or bfloat16 tensor; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in _LOW_PRECISION:
        return value.float()
    return value


def autocast_off(device_type: str):
    """A context with autocast switched off for ``device_type`` (a no-op outside autocast)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def full_precision(method):
    """Decorate a geometry method: half/bfloat16 tensor arguments are upcast to float32 and
    autocast is switched off inside, so hyperbolic functions (whose values grow like ``e^d``) and
    the clamps tuned per dtype never run in 16-bit arithmetic. Results come back in float32."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        args = tuple(upcast(a) for a in args)
        kwargs = {k: upcast(v) for k, v in kwargs.items()}
        device_type = next(
            (a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu"
        )
        with autocast_off(device_type):
            return method(self, *args, **kwargs)

    return wrapper

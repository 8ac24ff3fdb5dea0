"""Run geometry in float32 (or float64) even inside mixed-precision regions."""

from __future__ import annotations

import contextlib
import functools

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(value):
    if isinstance(value, torch.Tensor) and value.dtype in _LOW_PRECISION:
        return value.float()
    return value


def full_precision(method):
    """Decorate a geometry method: half/bfloat16 tensor arguments are upcast to float32 and
    autocast is switched off inside, so hyperbolic functions (whose values grow like ``e^d``) and
    the clamps tuned per dtype never run in 16-bit arithmetic. Results come back in float32."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        args = tuple(_upcast(a) for a in args)
        kwargs = {k: _upcast(v) for k, v in kwargs.items()}
        device_type = next(
            (a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu"
        )
        if torch.is_autocast_enabled(device_type):
            guard = torch.autocast(device_type=device_type, enabled=False)
        else:
            guard = contextlib.nullcontext()
        with guard:
            return method(self, *args, **kwargs)

    return wrapper

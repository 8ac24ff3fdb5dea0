r"""Pure functions for the Lorentz (hyperboloid) model of hyperbolic space.

Conventions (``docs/SPEC.md`` section 1): curvature is :math:`-c` with :math:`c > 0`; a point is
stored in *full coordinates* ``x = (x_t, x_s)`` with the time coordinate first and

.. math:: \langle x, y \rangle_L = x_s \cdot y_s - x_t y_t, \qquad \langle x, x \rangle_L = -1/c .

The origin is ``O = (1/sqrt(c), 0, ..., 0)``. geoopt's ``Lorentz(k)`` is the same model with
``k = 1/c``. MERU stores only the space part ``x_s``; :func:`from_space` / :func:`to_space` convert.

Every function takes the curvature as the keyword ``c`` (a float or a 0-dim tensor) and works on
the last dimension, broadcasting over the leading ones. Shapes in the docstrings use ``D = d + 1``
for full coordinates and ``d`` for space components.

Numerical notes. In float32, ``1 + 1e-8 == 1``: every clamp below takes its epsilon from
:func:`near_one_eps` or :func:`tiny` for the dtype at hand, so that it actually does something.
Exponential steps are capped at :func:`max_sqrt_c_norm` of the dtype: MERU's ``asinh(2**15)``
(:data:`MAX_SQRT_C_NORM`) in float32 and lower precisions, so that no coordinate of a point from the
origin exceeds ``2**15 / sqrt(c)`` and squares and products of coordinates stay finite in float32
(and trained models see exactly MERU's map); in float64 a far larger ``asinh(2**239)``
(:data:`MAX_SQRT_C_NORM_FLOAT64`), derived the same way, so float64 maps are exact up to geodesic
lengths of about ``166 / sqrt(c)``. :func:`transp` evaluates float32 (and lower) inputs in float64:
its result depends on low-order bits of coordinates of size ``e^{sqrt(c) r}`` that float32 arithmetic
cannot keep.

geoopt parity: :func:`inner0`, :func:`logmap0back`, :func:`geodesic_unit` and the Poincaré-ball maps
:func:`lorentz_to_poincare` / :func:`poincare_to_lorentz` have geoopt's meaning with ``k = 1/c``
(the ball here is the isometric one, of curvature ``-c`` and radius ``1/sqrt(c)``; geoopt's free
functions use the unit ball for every ``k``, i.e. ``sqrt(c)`` times our ball point).
"""

from __future__ import annotations

import functools
import math

import torch

# MERU's cap on sqrt(c)·|v| in the exponential map: sinh of it is 2**15, so coordinates and their
# pairwise products (~2**30) stay far from the float32 overflow at ~3.4e38. Kept for float32 and
# every lower precision (trained MERU models run their exponential map in float32 with this cap).
MAX_SQRT_C_NORM = math.asinh(2.0**15)

# The float64 cap, derived the same way. The largest quantities the geometry forms are products of
# four coordinates (z**2 with z = -c<x, y>_L in the pairwise distance): with coordinates up to 2**15
# that is 2**60, 2**68 below float32's overflow at 2**128. Keeping the same 2**68 headroom below
# float64's overflow at 2**1024 gives coordinates up to 2**((1024 - 68) / 4) = 2**239.
MAX_SQRT_C_NORM_FLOAT64 = math.asinh(2.0**239)


def max_sqrt_c_norm(dtype: torch.dtype) -> float:
    """Cap on ``sqrt(c)·|v|`` (a geodesic length times ``sqrt(c)``) in the exponential maps for
    ``dtype``: :data:`MAX_SQRT_C_NORM_FLOAT64` (about 166.4) in float64, MERU's
    :data:`MAX_SQRT_C_NORM` (about 11.09) in every other dtype."""
    return MAX_SQRT_C_NORM_FLOAT64 if dtype == torch.float64 else MAX_SQRT_C_NORM


def near_one_eps(dtype: torch.dtype) -> float:
    """Gap from 1 that is representable in ``dtype``: used to keep acosh/asin/acos off their
    infinite-slope end points (``1 + 1e-8 == 1`` in float32, so one value cannot serve all)."""
    return 1e-12 if dtype == torch.float64 else 1e-6


def tiny(dtype: torch.dtype) -> float:
    """Smallest squared norm treated as non-zero: keeps ``sqrt`` and divisions by norms finite
    (and their gradients finite) for zero vectors, without touching any representable norm of
    interest."""
    return 1e-100 if dtype == torch.float64 else 1e-30


def _safe_norm(x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm over the last dimension whose gradient is finite (zero) at ``x = 0``."""
    squared = x.pow(2).sum(dim=-1, keepdim=keepdim)
    # Guards sqrt'(0) = inf: below `tiny` the norm is frozen and its gradient is zero.
    return squared.clamp_min(tiny(x.dtype)).sqrt()


def _unit_and_norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x/|x|, |x|)`` over the last dimension, ``(0, 0)`` at ``x = 0``, with finite gradients.

    ``x`` is first divided by its largest absolute component, so the direction is a unit vector even
    for norms below :func:`tiny`'s square root (``x / _safe_norm(x)`` is shorter than 1 there)."""
    # Guards the division by zero at x = 0 (then the direction is 0 and the norm 0).
    largest = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    scaled = x / largest
    scaled_norm = _safe_norm(scaled, keepdim=True)
    return scaled / scaled_norm, largest * scaled_norm


def time_component(x_space: torch.Tensor, *, c) -> torch.Tensor:
    r"""Time coordinate of the point with space part ``x_space``: :math:`\sqrt{1/c + |x_s|^2}`.

    ``(..., d) -> (..., 1)``."""
    return (1.0 / c + x_space.pow(2).sum(dim=-1, keepdim=True)).sqrt()


def from_space(x_space: torch.Tensor, *, c) -> torch.Tensor:
    """MERU's space components ``(..., d)`` -> full coordinates ``(..., d + 1)``, time first."""
    return torch.cat([time_component(x_space, c=c), x_space], dim=-1)


def to_space(x: torch.Tensor) -> torch.Tensor:
    """Full coordinates ``(..., d + 1)`` -> space components ``(..., d)``."""
    return x[..., 1:]


def lorentz_to_poincare(x: torch.Tensor, *, c) -> torch.Tensor:
    r"""Hyperboloid -> Poincaré ball of curvature :math:`-c` (radius :math:`1/\sqrt{c}`), the isometry

    .. math:: p = \frac{x_s}{1 + \sqrt{c}\,x_t} .

    geoopt's ``lorentz_to_poincare(x, k)`` is :math:`x_s / (x_t + \sqrt{k})`, the same map into the
    *unit* ball (``sqrt(c)`` times ``p``); geoopt's ``PoincareBall(c)`` is the ball used here, so
    ``PoincareBall(c).dist(p, q)`` equals :func:`dist`. ``(..., D) -> (..., d)``."""
    return x[..., 1:] / (1.0 + c**0.5 * x[..., :1])


def poincare_to_lorentz(p: torch.Tensor, *, c) -> torch.Tensor:
    r"""Poincaré ball of curvature :math:`-c` -> hyperboloid, the inverse of :func:`lorentz_to_poincare`:

    .. math:: x_s = \frac{2p}{1 - c|p|^2}, \qquad
              x_t = \frac{1 + c|p|^2}{\sqrt{c}\,(1 - c|p|^2)} = \sqrt{1/c + |x_s|^2} .

    (geoopt's ``poincare_to_lorentz(q, k)`` gives the same point for ``q = sqrt(c) p``.)
    :math:`1 - c|p|^2` is formed as :math:`(1 - \sqrt{c}|p|)(1 + \sqrt{c}|p|)`, and the time
    coordinate is recomputed from the space part, so the point lies on the hyperboloid.
    ``(..., d) -> (..., D)``."""
    scaled_norm = c**0.5 * _safe_norm(p, keepdim=True)
    # Guards the division for points on (or, by rounding, beyond) the boundary of the ball: they map
    # to huge but finite space parts instead of inf/NaN or a reflected point.
    gap = ((1.0 - scaled_norm) * (1.0 + scaled_norm)).clamp_min(tiny(p.dtype))
    return from_space(2.0 * p / gap, c=c)


def project(x: torch.Tensor, *, c) -> torch.Tensor:
    """Put ``x`` back on the hyperboloid by recomputing its time coordinate from its space part.

    ``(..., D) -> (..., D)``."""
    return from_space(x[..., 1:], c=c)


def origin(*size: int, c, dtype=None, device=None) -> torch.Tensor:
    """The origin ``(1/sqrt(c), 0, ..., 0)`` broadcast to ``size`` (last entry is ``D``)."""
    point = torch.zeros(*size, dtype=dtype, device=device)
    point[..., 0] = 1.0 / math.sqrt(float(c))
    return point


def inner(u: torch.Tensor, v: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    r"""Lorentz inner product :math:`u_s \cdot v_s - u_t v_t`, row-wise.

    ``(..., D), (..., D) -> (...)`` (``(..., 1)`` with ``keepdim``)."""
    product = u * v
    result = product[..., 1:].sum(dim=-1, keepdim=True) - product[..., :1]
    return result if keepdim else result.squeeze(-1)


def inner0(v: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Lorentz inner product with the origin :math:`O = (1/\sqrt{c}, 0, \dots, 0)`:
    :math:`\langle v, O\rangle_L = -v_t/\sqrt{c}` (geoopt's ``inner0``, ``-v_t\sqrt{k}``).

    ``(..., D) -> (...)`` (``(..., 1)`` with ``keepdim``)."""
    result = -v[..., :1] / c**0.5
    return result if keepdim else result.squeeze(-1)


def pairwise_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""All Lorentz inner products :math:`\langle x_i, y_j \rangle_L` as one matrix product.

    ``(n, D), (m, D) -> (n, m)``."""
    # Negating x's time column turns the Minkowski form into a plain dot product (one broadcast
    # multiply over x, cheaper than concatenating a negated column).
    return (x * _minkowski_signs(x.shape[-1], time_sign=-1.0, like=x)) @ y.transpose(-1, -2)


def _minkowski_signs(width: int, *, time_sign: float, like: torch.Tensor) -> torch.Tensor:
    """``(s, -s, ..., -s)`` of length ``width`` with ``s = time_sign``, in ``like``'s dtype and
    device: multiplying a row by it (``s = -1``) and taking plain dot products gives ``<x, y>_L``.
    A cached constant (never to be written to)."""
    return _cached_signs(width, float(time_sign), like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_signs(width: int, time_sign: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_minkowski_signs`, built once per width, sign, dtype and device (building it costs
    four small operations, a noticeable share of a pairwise distance's fixed cost); a normal
    tensor even when first asked for under ``torch.inference_mode`` (autograd may save it later)."""
    with torch.inference_mode(False):
        signs = torch.full((width,), -time_sign, dtype=dtype, device=device)
        signs[0] = time_sign
    return signs


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a cached 0-dim tensor in ``like``'s dtype and device (never to be written to):
    ``addcmul(-1, z, z)`` is ``z² - 1`` and ``addcdiv(z, 1, r)`` is ``z + 1/r`` in one pass each, and
    CUDA's ``addcmul`` refuses a CPU scalar tensor as its first argument."""
    return _cached_scalar(float(value), like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_scalar`, built once per value, dtype and device (normal tensors, see :func:`_cached_signs`)."""
    with torch.inference_mode(False):
        return torch.full((), value, dtype=dtype, device=device)


def lorentz_norm(u: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    r"""Norm :math:`\sqrt{\langle u, u \rangle_L}` of a tangent (space-like) vector.

    ``(..., D) -> (...)``."""
    squared = inner(u, u, keepdim=keepdim)
    # Tangent vectors are space-like (<u,u>_L >= 0); rounding can make it slightly negative, and
    # sqrt'(0) is infinite: clamp at `tiny` so both the value and the gradient stay finite.
    return squared.clamp_min(tiny(u.dtype)).sqrt()


def expmap0_space(v: torch.Tensor, *, c) -> torch.Tensor:
    r"""MERU's exponential map at the origin on space components:

    .. math:: x_s = \frac{\sinh(\sqrt{c}\,|v|)}{\sqrt{c}\,|v|}\, v .

    ``sqrt(c)|v|`` is capped at :func:`max_sqrt_c_norm` of ``v``'s dtype (MERU's ``asinh(2**15)``
    in float32, ``asinh(2**239)`` in float64). ``(..., d) -> (..., d)``."""
    sqrt_c = c**0.5
    scaled_norm = sqrt_c * _safe_norm(v, keepdim=True)
    # Guards sinh overflow (and overflow of later squares and products of coordinates): the cap of
    # the dtype (MERU's asinh(2**15) in float32).
    capped = scaled_norm.clamp_max(max_sqrt_c_norm(scaled_norm.dtype))
    return torch.sinh(capped) * v / scaled_norm


def logmap0_space(x_space: torch.Tensor, *, c) -> torch.Tensor:
    r"""MERU's logarithmic map at the origin on space components:

    .. math:: v = \frac{\operatorname{asinh}(\sqrt{c}\,|x_s|)}{\sqrt{c}\,|x_s|}\, x_s ,

    the same value as MERU's ``arccosh(sqrt(1 + c|x_s|^2))`` but with a finite slope at the origin.
    ``(..., d) -> (..., d)``."""
    scaled_norm = c**0.5 * _safe_norm(x_space, keepdim=True)
    return torch.asinh(scaled_norm) * x_space / scaled_norm


def expmap0(u: torch.Tensor, *, c) -> torch.Tensor:
    """Exponential map at the origin of a tangent vector in full coordinates.

    The tangent space at the origin is ``{u : u_t = 0}``, so the time component of ``u`` is
    ignored (this projects ``u`` onto that tangent space first). ``(..., D) -> (..., D)``."""
    return from_space(expmap0_space(u[..., 1:], c=c), c=c)


def logmap0(y: torch.Tensor, *, c) -> torch.Tensor:
    """Logarithmic map at the origin: a tangent vector ``(0, v)``. ``(..., D) -> (..., D)``."""
    v = logmap0_space(y[..., 1:], c=c)
    return torch.cat([torch.zeros_like(y[..., :1]), v], dim=-1)


def dist0(x: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance to the origin, :math:`\operatorname{asinh}(\sqrt{c}|x_s|)/\sqrt{c}`.

    (Equal to MERU's ``arccosh(sqrt(c) x_t)/sqrt(c)``, without arccosh's infinite slope at 1.)
    ``(..., D) -> (...)``."""
    sqrt_c = c**0.5
    return torch.asinh(sqrt_c * _safe_norm(x[..., 1:], keepdim=keepdim)) / sqrt_c


def acosh_distance(minus_c_inner: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\operatorname{arccosh}(z)/\sqrt{c}` from the scaled inner product :math:`z = -c\langle x, y\rangle_L`.

    Evaluated as :math:`\log\big(z + \sqrt{z^2 - 1}\big)`, several times faster than
    ``torch.acosh`` (not vectorised on CPU). Rounding :math:`z^2 - 1` costs an error equal to that of
    perturbing :math:`z` by an ulp, which any :math:`z` coming out of a matrix product carries
    anyway. :math:`z^2` stays finite up to :math:`z \approx 1.8\cdot 10^{19}` in float32: points
    from :func:`expmap0_space` (capped) are at most :math:`z \approx 2^{31}` apart.
    ``(...) -> (...)``."""
    # Guards arccosh's domain (z >= 1, rounding gives z < 1 for near-identical points) and its
    # infinite slope at z = 1 (identical points, e.g. the diagonal of a pairwise matrix).
    clamped = minus_c_inner.clamp_min(1.0 + near_one_eps(minus_c_inner.dtype))
    root = torch.addcmul(_scalar(-1.0, clamped), clamped, clamped).sqrt()
    return torch.log(clamped + root) / c**0.5


def chord_sq(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""Squared Lorentz norm of the chord, :math:`\langle x - y, x - y\rangle_L \ge 0`, accurately.

    With the Poincaré-ball denominators :math:`a = 1 + \sqrt{c}\,x_t`, :math:`b = 1 + \sqrt{c}\,y_t`
    (the ball point of ``x`` is :math:`\sqrt{c}\,x_s / a` and :math:`1 - |p|^2 = 2/a`), the
    Poincaré distance formula gives

    .. math:: \langle x - y, x - y\rangle_L = a\,b\,\big|x_s/a - y_s/b\big|^2 ,

    a squared Euclidean norm: no difference of large squares (``|x_s - y_s|^2 - (x_t - y_t)^2``
    cancels like :math:`e^{\sqrt{c}(r_x + r_y)}` far from the origin), and full relative precision
    for nearby points. ``(..., D), (..., D) -> (..., 1)``; clamped at :func:`tiny`."""
    sqrt_c = c**0.5
    a = 1.0 + sqrt_c * x[..., :1]
    b = 1.0 + sqrt_c * y[..., :1]
    squared = (a * b) * (x[..., 1:] / a - y[..., 1:] / b).pow(2).sum(-1, keepdim=True)
    # Guards sqrt at 0 (identical points): the value and the gradient stay finite.
    return squared.clamp_min(tiny(x.dtype))


def dist(x: torch.Tensor, y: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance, row-wise and broadcasting:

    .. math:: d(x, y) = \frac{2}{\sqrt{c}} \operatorname{asinh}\Big(\frac{\sqrt{c}}{2}
              \sqrt{\langle x - y, x - y\rangle_L}\Big),

    which equals :math:`\operatorname{arccosh}(-c\langle x,y\rangle_L)/\sqrt{c}` on the hyperboloid
    but keeps full relative precision for nearby points (no cancellation in ``1 - z``); the chord
    comes from :func:`chord_sq`. ``(..., D), (..., D) -> (...)``."""
    sqrt_c = c**0.5
    result = 2.0 / sqrt_c * torch.asinh(0.5 * sqrt_c * chord_sq(x, y, c=c).sqrt())
    return result if keepdim else result.squeeze(-1)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""All geodesic distances :math:`\operatorname{arccosh}(-c\langle x_i, y_j\rangle_L)/\sqrt{c}`
    (MERU's pairwise form) from one matrix product. ``(n, D), (m, D) -> (n, m)``.

    ``-c`` and the Minkowski signs are folded into the side with fewer rows before the product (an
    ``(n, D)`` pass instead of an ``(n, m)`` one, :func:`_fold_minkowski_signs`). The elementwise
    tail, :func:`acosh_distance`'s formula, runs in place on the product
    (:func:`_arccosh_in_place`); when a gradient is needed the same forward keeps
    :math:`\sqrt{z^2 - 1}`, the reciprocal of arccosh's slope, and the backward is one elementwise pass and one matrix product per input
    (:class:`_PairwiseArccosh`). Inputs with batch dimensions take :func:`acosh_distance` of a
    batched product.

    Precision: for nearly coincident points far from the origin, :math:`z - 1` is swamped by the
    rounding of :math:`c\,x_t y_t` (about :math:`D\epsilon\,e^{\sqrt{c}(r_x + r_y)}`), so small
    distances come out as about the square root of that; :func:`dist` is accurate there."""
    scale = c**-0.5
    left, right = _fold_minkowski_signs(x, y, c=c)
    if x.dim() != 2 or y.dim() != 2:
        return acosh_distance(left @ right.transpose(-1, -2), c=c)
    if _needs_grad(left, right, scale):
        return _PairwiseArccosh.apply(left, right, scale)
    product = torch.mm(left, right.t())
    return _arccosh_in_place(product, torch.empty_like(product), scale=scale)


def _fold_minkowski_signs(x: torch.Tensor, y: torch.Tensor, *, c) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(a, b)`` with :math:`a\,b^T = -c\langle x_i, y_j\rangle_L`: the side with fewer rows
    multiplied by :math:`c\,(1, -1, \dots, -1)`, the other as is. ``(..., n, D), (..., m, D)``."""
    scaled_signs = _minkowski_signs(x.shape[-1], time_sign=1.0, like=x) * c
    if x.shape[-2] <= y.shape[-2]:
        return x * scaled_signs, y
    return x, y * scaled_signs


def _needs_grad(*values) -> bool:
    """Whether autograd is recording and any of ``values`` (tensors or numbers) requires a gradient."""
    return torch.is_grad_enabled() and any(isinstance(v, torch.Tensor) and v.requires_grad for v in values)


def _arccosh_floor(dtype: torch.dtype) -> float:
    """Smallest argument :func:`acosh_distance` evaluates: ``1 + near_one_eps(dtype)``."""
    return 1.0 + near_one_eps(dtype)


def _arccosh_in_place(z: torch.Tensor, roots: torch.Tensor, *, scale) -> torch.Tensor:
    r"""``z`` becomes :func:`acosh_distance` of it, in place, ``(n, m), (n, m) -> (n, m)`` (``z``
    itself), and ``roots`` receives :math:`\sqrt{\bar z^2 - 1}`, with
    :math:`\bar z = \max(z, 1 + \epsilon)` and ``s = scale`` (:math:`1/\sqrt{c}`):

    .. math:: \text{roots} = \sqrt{\bar z^2 - 1},\qquad d = \log\big(\bar z + \text{roots}\big)\cdot s .

    Six passes over ``z`` after the product (clamp, ``addcmul``, ``sqrt``, ``add``, ``log``, scale),
    each the cheapest torch has for its step on the CPU: ``sqrt`` is vectorised where ``rsqrt`` is
    about three times slower, and ``add`` is cheaper than ``addcdiv`` (``benchmarks.geometry_speed
    --profile``). The roots are arccosh's slope's reciprocal, which the backward divides by. The
    values are :func:`acosh_distance`'s formula evaluated in the same order."""
    # Guards arccosh's domain (z >= 1, rounding gives z < 1 for near-identical points) and its
    # infinite slope at z = 1 (identical points, e.g. the diagonal of a pairwise matrix): the root
    # stays above sqrt(2 eps), so the backward's division is finite.
    z.clamp_(min=_arccosh_floor(z.dtype))
    torch.addcmul(_scalar(-1.0, z), z, z, out=roots).sqrt_()
    return z.add_(roots).log_().mul_(scale)


class _PairwiseArccosh(torch.autograd.Function):
    r"""``d = arccosh(max(a b^T, 1 + eps)) * s``, ``(n, D), (m, D), s -> (n, m)``, with the backward

    .. math:: w_{ij} = \frac{g_{ij}}{\sqrt{\bar z_{ij}^2 - 1}}\ (0 \text{ where clamped}),\quad
              \nabla_a = s\,w\,b,\quad \nabla_b = s\,w^T a,\quad \nabla_s = \sum_{ij} g_{ij}\,d_{ij}/s ,

    the gradient of :func:`acosh_distance` (``s`` is :math:`1/\sqrt{c}`, a number or a 0-dim
    tensor) from the roots the forward computed anyway: one elementwise pass and one matrix
    product per input, where autograd of the formula takes six passes over ``(n, m)``. "Clamped" is
    :math:`z \le 1 + \epsilon`, where ``torch.clamp``'s gradient is 0 too. Not twice
    differentiable."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, scale) -> torch.Tensor:
        product = torch.mm(a, b.t())
        clamped = product <= _arccosh_floor(product.dtype)
        roots = torch.empty_like(product)
        distances = _arccosh_in_place(product, roots, scale=scale)
        scale_tensor = scale if isinstance(scale, torch.Tensor) else None
        ctx.scale_number = None if scale_tensor is not None else scale
        # A copy of the distances, and only for the scale's gradient: callers may edit the result
        # in place (e.g. zero the diagonal) before the backward, as they could the formula's.
        kept_distances = distances.clone() if ctx.needs_input_grad[2] else None
        ctx.save_for_backward(a, b, roots, clamped, kept_distances, scale_tensor)
        return distances

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, b, roots, clamped, distances, scale_tensor = ctx.saved_tensors
        scale = ctx.scale_number if scale_tensor is None else scale_tensor
        weights = torch.div(grad, roots).masked_fill_(clamped, 0.0)
        grad_a = torch.mm(weights, b).mul_(scale) if ctx.needs_input_grad[0] else None
        grad_b = torch.mm(weights.t(), a).mul_(scale) if ctx.needs_input_grad[1] else None
        grad_scale = None
        if ctx.needs_input_grad[2]:
            grad_scale = (torch.sum(grad * distances) / scale).to(scale_tensor)
        return grad_a, grad_b, grad_scale


def proju(x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r"""Project ``u`` onto the tangent space at ``x``: :math:`u + c\langle x, u\rangle_L\, x`."""
    return u + c * inner(x, u, keepdim=True) * x


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, *, c) -> torch.Tensor:
    """Riemannian gradient: apply the inverse Minkowski metric (flip the time sign), then project."""
    flipped = torch.cat([-grad[..., :1], grad[..., 1:]], dim=-1)
    return proju(x, flipped, c=c)


def _tangent_norm_space(x: torch.Tensor, u_space: torch.Tensor, *, c) -> torch.Tensor:
    """:func:`tangent_norm` from the space part ``u_space`` ``(..., d)``; returns ``(..., 1)``."""
    x_unit, _ = _unit_and_norm(x[..., 1:])
    along = (u_space * x_unit).sum(-1, keepdim=True)
    across = u_space - along * x_unit
    squared = across.pow(2).sum(-1, keepdim=True) + along.pow(2) / (c * x[..., :1].pow(2))
    # Guards sqrt'(0) = inf for a zero tangent vector.
    return squared.clamp_min(tiny(u_space.dtype)).sqrt()


def tangent_norm(x: torch.Tensor, u: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Lorentz norm of the tangent vector at ``x`` whose space part is ``u_s`` (``u``'s time
    coordinate is not read: it is the one that makes ``u`` tangent, :math:`x_s\cdot u_s / x_t`).

    Split :math:`u_s = \alpha\,\hat x_s + u_\perp` along :math:`\hat x_s = x_s/|x_s|`; then

    .. math:: |u|_L^2 = |u_\perp|^2 + \frac{\alpha^2}{c\,x_t^2},

    a sum of non-negative terms. The textbook :math:`|u_s|^2 - u_t^2` cancels catastrophically far
    from the origin (both terms grow like :math:`e^{2\sqrt{c}\,d(O, x)}`), which in float32 turns
    into garbage or NaN a few units from the origin. ``(..., D), (..., D) -> (...)``."""
    result = _tangent_norm_space(x, u[..., 1:], c=c)
    return result if keepdim else result.squeeze(-1)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\exp_x(u) = \cosh(\sqrt{c}|u|_L)\,x + \frac{\sinh(\sqrt{c}|u|_L)}{\sqrt{c}|u|_L}\,u`.

    ``u`` is read through its space part (its time coordinate is taken as the one that makes it
    tangent at ``x``, see :func:`tangent_norm`); the result's time coordinate is recomputed from its
    space part, so it lies on the hyperboloid. Steps longer than ``max_sqrt_c_norm(dtype) / sqrt(c)``
    are shortened to that length, as in MERU's map at the origin, so ``expmap`` at the origin equals
    :func:`expmap0`: about ``11.09 / sqrt(c)`` in float32 (MERU's cap), ``166.4 / sqrt(c)`` in
    float64, where ``d(x, expmap(x, u)) = |u|_L`` holds to full precision below that (e.g. 20.0 for
    ``|u|_L = 20``, ``c = 1``, as geoopt). ``(..., D), (..., D) -> (..., D)``."""
    scaled_norm = c**0.5 * tangent_norm(x, u, c=c, keepdim=True)
    # Guards cosh/sinh overflow for huge steps (same dtype-dependent cap as the map at the origin).
    capped = scaled_norm.clamp_max(max_sqrt_c_norm(scaled_norm.dtype))
    moved = torch.cosh(capped) * x[..., 1:] + torch.sinh(capped) / scaled_norm * u[..., 1:]
    return from_space(moved, c=c)


def geodesic_unit(t, x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r"""Point at time ``t`` on the unit-speed geodesic from ``x`` with direction ``u`` (geoopt's
    ``geodesic_unit``):

    .. math:: \gamma(t) = \cosh(\sqrt{c}\,t)\,x + \frac{\sinh(\sqrt{c}\,t)}{\sqrt{c}}\,\hat u,
              \qquad \hat u = u/|u|_L .

    geoopt's formula assumes ``|u|_L = 1`` (its docstring says direction :math:`u/\|u\|_x`); here
    ``u`` is normalised first, so any non-zero tangent vector gives the same curve, and a unit ``u``
    gives geoopt's point. ``d(x, \gamma(t)) = |t|``; negative ``t`` runs backwards. ``u`` is read
    through its space part (as in :func:`expmap`), the result's time coordinate is recomputed, and
    ``sqrt(c)|t|`` is capped at :func:`max_sqrt_c_norm` like the exponential maps (so for ``t >= 0``
    this is ``expmap(x, t u/|u|_L)``). ``t``: a number or a tensor broadcasting against ``(..., 1)``;
    ``(..., D), (..., D) -> (..., D)``."""
    u_space = u[..., 1:]
    direction = u_space / _tangent_norm_space(x, u_space, c=c)
    scaled_time = c**0.5 * torch.as_tensor(t, dtype=direction.dtype, device=direction.device)
    cap = max_sqrt_c_norm(direction.dtype)
    # Guards cosh/sinh overflow for huge times (the exponential maps' cap, in both directions).
    scaled_time = scaled_time.clamp(-cap, cap)
    moved = torch.cosh(scaled_time) * x[..., 1:] + torch.sinh(scaled_time) / c**0.5 * direction
    return from_space(moved, c=c)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\log_x(y) = d(x, y)\, w/|w|_L` with :math:`w = y + c\langle x, y\rangle_L\, x`.

    On the hyperboloid :math:`c\langle x, y\rangle_L = -1 - \tfrac{c}{2}\kappa^2` with the chord
    :math:`\kappa^2 = \langle x-y, x-y\rangle_L` (:func:`chord_sq`), so
    :math:`w = (y - x) - \tfrac{c}{2}\kappa^2 x`, and with :math:`s = \sqrt{c}\,\kappa/2`,
    :math:`d = 2\operatorname{asinh}(s)/\sqrt{c}` and :math:`|w|_L = 2 s\sqrt{1+s^2}/\sqrt{c}`:

    .. math:: \log_x(y) = \frac{\operatorname{asinh}(s)}{s\sqrt{1 + s^2}}\, w .

    No norm of ``w`` is computed numerically (it cancels catastrophically far from the origin) and
    nothing is divided by a small distance (nearby points give a factor near 1). Only the space part
    is computed this way; the time coordinate is the one that makes the result tangent at ``x``,
    :math:`x_s\cdot v_s / x_t` (a difference of rounded time coordinates would leave a non-tangent
    residue of one ulp of :math:`x_t`). ``(..., D), (..., D) -> (..., D)``."""
    chord_squared = chord_sq(x, y, c=c)
    x_space = x[..., 1:]
    direction = (y[..., 1:] - x_space) - 0.5 * c * chord_squared * x_space
    half_scaled_chord = 0.5 * c**0.5 * chord_squared.sqrt()
    factor = torch.asinh(half_scaled_chord) / (
        half_scaled_chord * (1.0 + half_scaled_chord.pow(2)).sqrt()
    )
    v_space = factor * direction
    v_time = (x_space * v_space).sum(-1, keepdim=True) / x[..., :1]
    return torch.cat([v_time, v_space], dim=-1)


def logmap0back(x: torch.Tensor, *, c) -> torch.Tensor:
    r"""Logarithmic map of the origin at ``x`` (geoopt's ``logmap0back``): the tangent vector at ``x``
    pointing to the origin, :math:`\log_x(O)`, of Lorentz norm ``dist0(x)``. Computed by
    :func:`logmap` (no cancellation: the chord to the origin is a sum of squares).
    ``(..., D) -> (..., D)``."""
    origin_point = torch.cat(
        [torch.ones_like(x[..., :1]) / c**0.5, torch.zeros_like(x[..., 1:])], dim=-1
    )
    return logmap(x, origin_point, c=c)


def transp(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c) -> torch.Tensor:
    r"""Parallel transport of ``v`` from ``x`` to ``y`` along the geodesic:

    .. math:: P(v) = v + \frac{c\langle y, v\rangle_L}{1 - c\langle x, y\rangle_L}\,(x + y).

    Evaluated without the cancellations of the textbook form (whose numerator :math:`\langle y,
    v\rangle_L \to \langle x, v\rangle_L = 0` as :math:`y \to x` is a difference of products of
    size :math:`e^{2\sqrt{c} r}`, ``r`` the distance from the origin): with the chord
    :math:`w = y - x` and :math:`\kappa^2 = \langle w, w\rangle_L` (:func:`chord_sq`),

    - the denominator is :math:`1 - c\langle x, y\rangle_L = 2 + \tfrac{c}{2}\kappa^2`;
    - ``v`` tangent at ``x`` gives :math:`\langle y, v\rangle_L = \langle w, v\rangle_L =
      v_s\cdot u` with :math:`u = w_s - (w_t/x_t)\,x_s`;
    - split along :math:`\hat x = x_s/|x_s|`: :math:`u = w_\perp + u_r\hat x` where
      :math:`w_\perp` is the part of :math:`w_s` (equally of :math:`y_s`, whichever is shorter)
      orthogonal to :math:`\hat x`, and, with :math:`\alpha = w_s\cdot\hat x`,

      .. math:: u_r = \frac{\alpha\,(2/c + \kappa^2/2) - |x_s|\,|w_\perp|^2}{x_t\,(x_t + y_t)}

      (the radial part cancels like :math:`e^{-2\sqrt{c} r}` when formed directly);
    - :math:`v_s\cdot u = (v_s - \beta\hat x)\cdot w_\perp + \beta u_r` with
      :math:`\beta = v_s\cdot\hat x`.

    The space part is :math:`v_s + k(x_s + y_s)` with that coefficient ``k``; the time coordinate is
    the one that makes the result tangent at ``y``, :math:`y_s\cdot p_s / y_t`. ``x``, ``y`` and ``v``
    are read through their space parts: the points' time coordinates are recomputed
    (:func:`time_component`, as :func:`project`) and ``v``'s is the one that makes it tangent at
    ``x`` (as in :func:`expmap`). So the result is tangent at ``y``, has ``v``'s Lorentz norm, and
    :func:`transp` back returns ``v``.

    Precision: float32 (and lower) inputs are evaluated in float64 and the result is cast back. The
    transported vector depends on low-order bits of coordinates of size :math:`e^{\sqrt{c} r}`
    (e.g. the component of a far ``v`` orthogonal to :math:`\hat x`), which no float32 evaluation
    keeps; measured against the same float32 inputs evaluated in float64 (c = 1, points at distance
    5 and 8 from the origin, up to 3 apart), the relative error is ~5e-8 (one rounding), where the
    textbook form in float32 gave 2e-3 and 0.5-0.9. In float64 (against mpmath) the reformulation stays
    below 2e-8 at r = 16, where the textbook form reaches 1e-2. ``(..., D), (..., D), (..., D) -> (..., D)`` (broadcasting)."""
    if x.dtype == torch.float64 and y.dtype == torch.float64 and v.dtype == torch.float64:
        return _transp(x, y, v, c=c)
    out_dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), v.dtype)
    return _transp(x.double(), y.double(), v.double(), c=c).to(out_dtype)


def _transp(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c) -> torch.Tensor:
    """:func:`transp` in the dtype of its inputs (see there for the formulas)."""
    x_space, y_space, v_space = x[..., 1:], y[..., 1:], v[..., 1:]
    x_time, y_time = time_component(x_space, c=c), time_component(y_space, c=c)
    x_unit, x_norm = _unit_and_norm(x_space)  # zero at the origin, where every term along it vanishes
    chord_space = y_space - x_space
    along = (chord_space * x_unit).sum(-1, keepdim=True)
    y_along = (y_space * x_unit).sum(-1, keepdim=True)
    # The orthogonal part from the shorter of w_s and y_s: its rounding residue along x_unit (which
    # the large radial part of v would amplify) is then eps times the shorter length.
    y_shorter = y_space.pow(2).sum(-1, keepdim=True) < chord_space.pow(2).sum(-1, keepdim=True)
    across = torch.where(y_shorter, y_space - y_along * x_unit, chord_space - along * x_unit)
    full_x = torch.cat([x_time, x_space], dim=-1)
    full_y = torch.cat([y_time, y_space], dim=-1)
    denominator = 2.0 + 0.5 * c * chord_sq(full_x, full_y, c=c)  # 1 - c<x, y>_L >= 2
    radial = (along * denominator / c - x_norm * across.pow(2).sum(-1, keepdim=True)) / (
        x_time * (x_time + y_time)
    )
    v_along = (v_space * x_unit).sum(-1, keepdim=True)
    inner_yv = ((v_space - v_along * x_unit) * across).sum(-1, keepdim=True) + v_along * radial
    coefficient = c * inner_yv / denominator
    moved = v_space + coefficient * (x_space + y_space)
    moved_time = (y_space * moved).sum(-1, keepdim=True) / y_time
    return torch.cat([moved_time, moved], dim=-1)


def half_aperture(x: torch.Tensor, *, c, min_radius: float = 0.1) -> torch.Tensor:
    r"""Half-aperture of the entailment cone at ``x`` (MERU):
    :math:`\arcsin\big(2K / (\sqrt{c}\,|x_s|)\big)` with ``K = min_radius``.

    ``(..., D) -> (...)``."""
    eps = near_one_eps(x.dtype)
    ratio = 2.0 * min_radius / (c**0.5 * _safe_norm(x[..., 1:]))
    # Guards asin's domain: points within the minimum radius (ratio > 1) get the widest cone,
    # and asin's infinite slope at 1.
    return torch.asin(ratio.clamp(max=1.0 - eps))


def oxy_angle(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""Exterior angle at ``x`` of the triangle origin–x–y (MERU). With :math:`z = c\langle x, y\rangle_L`,

    .. math:: \operatorname{ext}(x, y) = \arccos\frac{y_t + z\,x_t}{|x_s|\sqrt{z^2 - 1}} ,

    ``y`` lies in the cone of ``x`` when this is at most :func:`half_aperture` of ``x``.

    Evaluated, equivalently, as the angle between two unit tangent vectors at ``x``: the outward
    radial direction :math:`\hat a = \sqrt{c}\,(|x_s|,\; x_t\,x_s/|x_s|)` and the direction
    :math:`\hat b = w/|w|_L` of :func:`logmap` towards ``y``, by the half-angle form

    .. math:: \operatorname{ext}(x, y) = 2\operatorname{atan2}\big(|\hat a - \hat b|_L,\;
              |\hat a + \hat b|_L\big)

    with both norms from :func:`tangent_norm` (no cancellation). The arccos form loses
    :math:`\sqrt{\epsilon}\,e^{\sqrt{c}\,r}`-sized errors near 0 and pi: in float32 a point on the
    cone's own axis read angles of 0.01–0.3 rad, larger than the aperture there. Degenerate cases
    agree with MERU's clamped form: ``y = x`` or ``x`` at the origin give pi/2.
    ``(..., D), (..., D) -> (...)`` (broadcasting)."""
    sqrt_c = c**0.5
    x_space = x[..., 1:]
    outward = sqrt_c * x[..., :1] * (x_space / _safe_norm(x_space, keepdim=True))
    chord_squared = chord_sq(x, y, c=c)
    toward = (y[..., 1:] - x_space) - 0.5 * c * chord_squared * x_space
    half_scaled_chord = 0.5 * sqrt_c * chord_squared.sqrt()
    toward_norm = 2.0 * half_scaled_chord * (1.0 + half_scaled_chord.pow(2)).sqrt() / sqrt_c
    toward = toward / toward_norm
    outward, toward = torch.broadcast_tensors(outward, toward)
    x = x.expand(*outward.shape[:-1], x.shape[-1])
    difference = _tangent_norm_space(x, outward - toward, c=c)
    total = _tangent_norm_space(x, outward + toward, c=c)
    return (2.0 * torch.atan2(difference, total)).squeeze(-1)

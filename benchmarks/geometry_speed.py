"""Speed of the pairwise Lorentz distance against a bare matrix product and against geoopt.

Run as ``python -m benchmarks.geometry_speed [--size 512] [--dim 512] [--repeats 30]``.

``--dim`` is the number of *space* components (MERU's embedding width); points are stored in full
coordinates, so the tensors are ``(size, dim + 1)`` and the reference matrix product is
``(size, dim + 1) @ (dim + 1, size)``, the product inside ``cdist``. Everything runs in float32 on the
CPU with torch's default number of threads (``--threads`` overrides it). Reported times are medians
over ``--repeats`` runs after warm-up runs, with the fastest run beside them (on a shared machine the
median of multi-threaded runs also measures the other load: every parallel elementwise operation
waits for a descheduled worker thread); ratios are relative to the bare ``torch.mm``.

Targets: ``Lorentz().cdist`` within 1.5x of the bare product, and at least 5x faster than geoopt's
broadcasting ``geoopt.Lorentz().dist(x[:, None], y[None])`` (which materialises an
``(size, size, dim + 1)`` tensor).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Callable, List, Tuple

import torch

from manifolds import Lorentz


def median_ms(fn: Callable[[], torch.Tensor], repeats: int, warmup: int) -> Tuple[float, float]:
    """Median and minimum wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def run(size: int, dim: int, repeats: int, warmup: int, geoopt_repeats: int) -> List[Tuple[str, Tuple[float, float]]]:
    torch.manual_seed(0)
    manifold = Lorentz()
    with torch.no_grad():
        x = manifold.lift(torch.randn(size, dim) / dim**0.5).float()
        y = manifold.lift(torch.randn(size, dim) / dim**0.5).float()
    x, y = x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)
    y_t = y.t().contiguous()

    rows = [
        ("torch.mm (bare product)", median_ms(lambda: torch.mm(x, y_t), repeats, warmup)),
        ("Lorentz().cdist", median_ms(lambda: manifold.cdist(x, y), repeats, warmup)),
    ]
    with torch.no_grad():
        rows.append(("Lorentz().cdist, no_grad", median_ms(lambda: manifold.cdist(x, y), repeats, warmup)))
    x_grad = x.clone().requires_grad_()
    rows.append(
        ("Lorentz().cdist, input requires grad", median_ms(lambda: manifold.cdist(x_grad, y), repeats, warmup))
    )
    try:
        import geoopt
    except ImportError:  # pragma: no cover - geoopt is a dependency of manifolds
        return rows
    reference = geoopt.Lorentz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # geoopt's torch.jit.script deprecation notice
        rows.append(
            (
                "geoopt.Lorentz().dist(x[:, None], y[None])",
                median_ms(lambda: reference.dist(x[:, None], y[None]), geoopt_repeats, 1),
            )
        )
        # Sanity: the same numbers (geoopt is accurate here, float32, moderate norms).
        ours, theirs = manifold.cdist(x, y), reference.dist(x[:, None], y[None])
        gap = float((ours - theirs).abs().max())
        if gap > 1e-3:
            raise AssertionError(f"cdist and geoopt disagree by {gap}")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="points per side (default 512)")
    parser.add_argument("--dim", type=int, default=512, help="space components (full coords dim+1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per operation")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument("--geoopt-repeats", type=int, default=5, help="timed runs of geoopt's path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    rows = run(args.size, args.dim, args.repeats, args.warmup, args.geoopt_repeats)
    (mm_ms, mm_min), (cdist_ms, cdist_min) = rows[0][1], rows[1][1]
    print(
        f"float32, CPU, {torch.get_num_threads()} threads; {args.size} x {args.size} points, "
        f"dim {args.dim} space components (full coordinates {args.dim + 1}); "
        f"{args.repeats} runs after {args.warmup} warm-up (geoopt: {args.geoopt_repeats})"
    )
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  {'median ms':>10}  {'ratio':>7}  {'min ms':>9}  {'ratio':>7}")
    for name, (ms, best) in rows:
        print(f"{name:<{width}}  {ms:>10.3f}  {ms / mm_ms:>6.2f}x  {best:>9.3f}  {best / mm_min:>6.2f}x")
    print(f"cdist / mm: {cdist_ms / mm_ms:.2f}x median, {cdist_min / mm_min:.2f}x min (target <= 1.5x)")
    if len(rows) > 4:
        geo_ms, geo_min = rows[-1][1]
        print(
            f"geoopt broadcasting / cdist: {geo_ms / cdist_ms:.1f}x median, {geo_min / cdist_min:.1f}x min "
            "(target >= 5x)"
        )


if __name__ == "__main__":
    main()

"""Speed of the pairwise distances against a bare matrix product of the same shape.

Run as ``python -m benchmarks.geometry_speed [--size 512] [--dim 512] [--repeats 40] [--threads N]
[--profile]``.

``--dim`` is the number of *space* components (MERU's embedding width). ``Lorentz().cdist`` takes
``(size, dim + 1)`` points in full coordinates and is compared with ``torch.mm`` of
``(size, dim + 1) @ (dim + 1, size)``, the product inside it; ``Euclidean().cdist`` takes
``(size, dim)`` points and is compared with ``(size, dim) @ (dim, size)``. Both are measured

- *forward*: inputs that need no gradient, against the bare ``torch.mm``;
- *forward+backward*: both inputs need a gradient, ``torch.autograd.grad`` of the distances with a
  fixed random output gradient, against the same for ``torch.mm`` (whose backward is two more
  products of the same size).

Everything runs in float32 on the CPU with torch's default number of threads (``--threads``
overrides it). The runs are interleaved in rounds (every operation once per round, the order
rotated from round to round) after warm-up rounds, so that a shared machine's load slows every
operation alike; each row gives the median over the rounds, its ratio to the median of the bare
product, the median over the rounds of the per-round ratio, and the fastest round with its ratio to
the product's fastest (on a shared machine the median also measures the other jobs: with several
threads every parallel elementwise pass can wait for a descheduled worker, so measure with
``OMP_NUM_THREADS=1 ... --threads 1`` there; README quotes both). Targets (issue 12): forward within
1.2x and forward+backward within 1.5x of the bare product, for both geometries; geoopt's
broadcasting ``geoopt.Lorentz().dist(x[:, None], y[None])`` (which materialises a
``(size, size, dim + 1)`` tensor) at least 5x slower than ``Lorentz().cdist``.

``--profile`` adds, for each distance, torch.profiler's self CPU time per operator: where the time
goes beyond the product. ``--fused`` adds a row for the Lorentz forward with its elementwise tail
fused into one loop by ``torch.compile`` (inductor; needs a C++ compiler and tens of seconds to
compile): what a fused kernel would buy over ``Lorentz().cdist``'s in-place passes.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from manifolds import Euclidean, Lorentz
from manifolds.lorentz_math import near_one_eps

#: Issue 12's targets: distances / bare product, forward and forward+backward.
TARGETS = {"forward": 1.2, "forward+backward": 1.5}


@dataclass(frozen=True)
class Case:
    """One timed operation: ``run()`` does the work; ``reference`` names the row it is compared with."""

    name: str
    run: Callable[[], object]
    reference: str
    kind: str  # "forward" or "forward+backward"


def random_points(size: int, dim: int) -> Dict[str, torch.Tensor]:
    """Float32 points of both geometries, plain tensors: ``lorentz`` ``(size, dim + 1)`` lifted from
    features of norm about 1, ``euclidean`` ``(size, dim)``; ``x`` and ``y`` sides."""
    torch.manual_seed(0)
    with torch.no_grad():
        features = torch.randn(2, size, dim) / dim**0.5
        lifted = Lorentz().lift(features).float().as_subclass(torch.Tensor)
    return {"lorentz": (lifted[0], lifted[1]), "euclidean": (features[0].clone(), features[1].clone())}


def forward_and_backward(fn: Callable, x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor) -> Callable:
    """A call computing ``fn(x, y)`` and the gradients of ``<grad, fn(x, y)>`` for both inputs."""
    x, y = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    return lambda: torch.autograd.grad(fn(x, y), (x, y), grad)


def cases(size: int, dim: int) -> List[Case]:
    """The timed operations: bare products and distances, forward and forward+backward."""
    points = random_points(size, dim)
    grad = torch.randn(size, size, generator=torch.Generator().manual_seed(1))
    geometries = {"lorentz": ("Lorentz().cdist", Lorentz().cdist), "euclidean": ("Euclidean().cdist", Euclidean().cdist)}
    rows = []
    for key, (label, distance) in geometries.items():
        x, y = points[key]
        width = x.shape[-1]
        product = f"torch.mm ({size}x{width} @ {width}x{size})"
        bare = lambda a, b: torch.mm(a, b.t())  # noqa: E731 - the product inside cdist
        rows += [
            Case(product, lambda x=x, y=y: bare(x, y), product, "forward"),
            Case(label, lambda x=x, y=y, d=distance: d(x, y), product, "forward"),
            Case(f"{product}, +backward", forward_and_backward(bare, x, y, grad), f"{product}, +backward",
                 "forward+backward"),
            Case(f"{label}, +backward", forward_and_backward(distance, x, y, grad), f"{product}, +backward",
                 "forward+backward"),
        ]
    return rows


def fused_lorentz_case(size: int, dim: int) -> Case:
    """``Lorentz().cdist``'s forward formula (the product of the sign-folded points, then arccosh as
    ``log(z + sqrt(z² - 1))`` on the clamped product) compiled by ``torch.compile``, which fuses
    everything after the product into one loop; compared with the same bare product as
    ``Lorentz().cdist``. Checks that it agrees with ``Lorentz().cdist`` and prints the compile time."""
    x, y = random_points(size, dim)["lorentz"]
    geometry = Lorentz()
    curvature = float(geometry.c)
    signs = torch.full((x.shape[-1],), -curvature)
    signs[0] = curvature

    def formula(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Guards arccosh's domain with the clamp of lorentz_math (rounding gives z < 1 near the diagonal).
        z = torch.mm(a * signs, b.t()).clamp_min(1.0 + near_one_eps(a.dtype))
        return torch.log(z + torch.sqrt(z * z - 1.0)) / curvature**0.5

    compiled = torch.compile(formula, dynamic=False)
    start = time.perf_counter()
    with torch.no_grad():
        gap = float((compiled(x, y) - geometry.cdist(x, y)).abs().max())
    print(f"torch.compile of the Lorentz formula: compiled in {time.perf_counter() - start:.1f} s; "
          f"largest difference from Lorentz().cdist {gap:.1e}")
    if gap > 1e-4:
        raise AssertionError(f"the compiled formula and Lorentz().cdist disagree by {gap}")
    width = x.shape[-1]
    return Case("Lorentz formula, torch.compile (fused)", lambda: compiled(x, y),
                f"torch.mm ({size}x{width} @ {width}x{size})", "forward")


def interleaved_times(rows: List[Case], *, repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Seconds per call of every case, one call of each per round, the order rotated by one each
    round; ``warmup`` untimed rounds first. Returns ``{name: [seconds per round]}``."""
    times = {row.name: [] for row in rows}
    for round_index in range(warmup + repeats):
        shift = round_index % len(rows)
        for row in rows[shift:] + rows[:shift]:
            start = time.perf_counter()
            row.run()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[row.name].append(elapsed)
    return times


def print_table(rows: List[Case], times: Dict[str, List[float]]) -> None:
    """Per row, against its reference: median ms and the ratio of medians, the median of per-round
    ratios, and the fastest round's ms and ratio (on a loaded machine the fastest round is the one
    least disturbed; medians also measure the other jobs)."""
    width = max(len(row.name) for row in rows)
    print(f"{'operation':<{width}}  {'median ms':>9}  {'ratio':>6}  {'per-round ratio':>15}  {'min ms':>7}  {'ratio':>6}")
    for row in rows:
        own, reference = times[row.name], times[row.reference]
        ratio = statistics.median(own) / statistics.median(reference)
        paired = statistics.median(a / b for a, b in zip(own, reference))
        fastest = min(own) / min(reference)
        print(f"{row.name:<{width}}  {1e3 * statistics.median(own):>9.3f}  {ratio:>5.2f}x  {paired:>14.2f}x"
              f"  {1e3 * min(own):>7.3f}  {fastest:>5.2f}x")


def print_verdicts(rows: List[Case], times: Dict[str, List[float]]) -> None:
    """One line per distance and kind: the ratio of medians (and of the fastest rounds) against its
    target."""
    for row in rows:
        if row.name == row.reference:
            continue
        own, reference = times[row.name], times[row.reference]
        ratio = statistics.median(own) / statistics.median(reference)
        target = TARGETS[row.kind]
        verdict = "meets" if ratio <= target else "MISSES"
        print(f"{row.name.split(',')[0]} {row.kind} / torch.mm: {ratio:.2f}x median, "
              f"{min(own) / min(reference):.2f}x fastest ({verdict} target <= {target}x on the median)")


def print_profile(rows: List[Case], *, calls: int = 20, top: int = 8) -> None:
    """torch.profiler's self CPU time per operator, per call, for every distance row."""
    from torch.profiler import ProfilerActivity, profile

    for row in rows:
        if row.name == row.reference:
            continue
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                row.run()
        events = sorted(prof.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
        total = sum(event.self_cpu_time_total for event in events)
        print(f"\n{row.name}: {total / calls / 1e3:.3f} ms of operators per call")
        for event in events[:top]:
            share = event.self_cpu_time_total / total
            print(f"  {event.key:<40} {event.self_cpu_time_total / calls / 1e3:>8.3f} ms  {share:>6.1%}"
                  f"  ({event.count // calls} per call)")


def geoopt_comparison(size: int, dim: int, *, repeats: int) -> None:
    """geoopt's broadcasting distance against ``Lorentz().cdist`` (and a check that they agree)."""
    try:
        import geoopt
    except ImportError:  # pragma: no cover - geoopt is a dependency of manifolds
        return
    x, y = random_points(size, dim)["lorentz"]
    reference, ours = geoopt.Lorentz(), Lorentz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # geoopt's torch.jit.script deprecation notice
        theirs = reference.dist(x[:, None], y[None])
        gap = float((ours.cdist(x, y) - theirs).abs().max())
        if gap > 1e-3:  # geoopt is accurate here: float32, moderate norms
            raise AssertionError(f"cdist and geoopt disagree by {gap}")
        times = interleaved_times(
            [Case("geoopt", lambda: reference.dist(x[:, None], y[None]), "geoopt", "forward"),
             Case("cdist", lambda: ours.cdist(x, y), "cdist", "forward")],
            repeats=repeats, warmup=1)
    ratio = statistics.median(times["geoopt"]) / statistics.median(times["cdist"])
    print(f"geoopt.Lorentz().dist(x[:, None], y[None]): {1e3 * statistics.median(times['geoopt']):.1f} ms, "
          f"{ratio:.0f}x Lorentz().cdist (target >= 5x)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="points per side (default 512)")
    parser.add_argument("--dim", type=int, default=512, help="space components (full coords dim+1)")
    parser.add_argument("--repeats", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--geoopt-repeats", type=int, default=3, help="timed runs of geoopt's path (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    parser.add_argument("--profile", action="store_true", help="also print the time per operator")
    parser.add_argument("--fused", action="store_true",
                        help="also time the Lorentz forward fused by torch.compile (needs a C++ compiler)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    rows = cases(args.size, args.dim)
    if args.fused:
        rows.append(fused_lorentz_case(args.size, args.dim))
    print(
        f"float32, CPU, {torch.get_num_threads()} threads; {args.size} x {args.size} points, "
        f"dim {args.dim} space components; {args.repeats} interleaved rounds after {args.warmup} warm-up"
    )
    times = interleaved_times(rows, repeats=args.repeats, warmup=args.warmup)
    print_table(rows, times)
    print_verdicts(rows, times)
    if args.geoopt_repeats > 0:
        geoopt_comparison(args.size, args.dim, repeats=args.geoopt_repeats)
    if args.profile:
        print_profile(rows)


if __name__ == "__main__":
    main()

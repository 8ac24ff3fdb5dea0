"""A short GPU check: numerical agreement with the CPU, MERU/HAC against CLIP/FT step cost, and a
two-process smoke test; prints a table and writes JSON.

Run as ``python -m benchmarks.gpu_check [--device auto|cuda|cpu] [--out runs/gpu_check.json]
[--batch-size 256] [--model-size vit-b] [--steps 10] [--quick]``. With the defaults it takes well
under six minutes on one H200; ``--quick`` (tiny models, batch 16, 2 steps) is for CPUs (about 10 s
on one thread).

What each number means:

**Geometry agreement** (``geometry_agreement``). Random float32 features ``v`` (rows of norm 0.5 to
3: MERU's scaled features, outside the cones' minimum radius, where the clamp guarding ``asin`` is
set per dtype and float32 and float64 differ by design) and points ``x = lift(v)``, ``y = lift(w)`` are built once
on the CPU. Each op of the Lorentz hyperboloid (``c = 0.5``) and of CLIP's normalised Euclidean
geometry runs on the device on these float32 tensors, plainly and inside bfloat16 autocast (the
geometry promises float32 arithmetic there too), and on the CPU in float64 on the same values.
``max_rel_error`` is ``max |device - reference| / max(|reference|, 1)`` over all elements: the
relative error, read as an absolute error for values below 1 (so that values near zero, e.g.
cosines of random vectors, do not inflate it). Pass: at most ``GEOMETRY_TOLERANCE`` (1e-4, about
a thousand float32 rounding units).

**Forward agreement** (``forward_agreement``). One MERU and one CLIP model of ``--model-size``, each
with one set of random weights, embed a few random images and token sequences on the device (in
float32, and in bfloat16 autocast as training runs on CUDA) and on the CPU in float64.
``max_abs_diff`` is the largest absolute difference of the image embeddings, the text embeddings
and the logits; ``max_rel_diff`` divides it by the largest reference magnitude. Pass: at most
``FORWARD_TOLERANCE`` (float32 1e-2: CUDA convolutions use TF32 by default; bfloat16 1e-1: an
8-bit mantissa through every layer).

**Step timing** (``step_timing``). One unlearning step of HAC on MERU and of plain fine-tuning
(``ft``) on CLIP, at ``--batch-size`` pairs (a quarter of them forget pairs, random images and
tokens), bfloat16 autocast on CUDA, float32 on CPU. ``unlearning.unlearn`` is called with a fixed
number of steps and no evaluation: after one untimed call, each repeat times a call of
``--warmup-steps`` steps and one of ``--warmup-steps + --steps`` steps (``torch.cuda.synchronize``
around each on CUDA); ``step_seconds`` = (median long call - median short call) / ``--steps``, so
that what every call pays once (copying the frozen model, building the optimiser) cancels out.
When timing noise makes that difference non-positive (tiny models on a busy CPU), the long call's
seconds per step are used instead and ``step_time_method`` says so. The time includes copying each
batch to the device, as in a real run. ``samples_per_second`` = batch size / ``step_seconds``;
``step_time_ratio_hac_over_ft`` compares the two methods (HAC also runs the frozen original model
and the cone and norm terms). ``peak_memory_bytes``: ``torch.cuda.max_memory_allocated`` over the
long calls on CUDA; on the CPU the process's peak resident memory so far (``ru_maxrss``: it cannot
be reset, so it is an upper bound for the check). ``flops_per_step``: matrix-multiply,
convolution and attention FLOPs of one whole ``unlearn`` step (forward, frozen-model forward,
backward) counted once, untimed, with ``torch.utils.flop_counter.FlopCounterMode`` (attention
through its math kernel, which the counter sees on every device). ``achieved_tflops`` =
``flops_per_step / step_seconds``; ``mfu`` (model FLOP utilisation) divides it by the device's dense
bfloat16 peak (``PEAK_BF16_TFLOPS`` by device name, or ``--peak-tflops``), "unknown" otherwise.

**Distributed smoke** (``distributed``). With more than one GPU: ``torchrun --nproc-per-node 2 -m
benchmarks.pretrain --geometry lorentz --dataset shapes --steps 20`` as a subprocess with a time
limit; ``status`` is ``passed``, ``failed`` (exit status and the end of its output recorded) or
``timed out``; ``skipped`` with one device.

``check_seconds``: wall time of each check; ``elapsed_seconds``: of the whole command (printed last,
against ``--time-budget``). ``passed``: every agreement check passed and no check raised (a check
that raises is recorded as ``{"error": ...}``; the others still run).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch

import models
import unlearning
from manifolds import Euclidean, Lorentz
from models.model import BPE_END, BPE_START
from models.training import autocast

from .common import InputError, resolve_device, tell, write_json

GEOMETRY_TOLERANCE = 1e-4
FORWARD_TOLERANCE = {"float32": 1e-2, "bfloat16 autocast": 1e-1}
# Dense bfloat16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched as
# substrings of torch.cuda.get_device_name in this order (so "H100 PCIe" is tried before "H100").
PEAK_BF16_TFLOPS = (
    ("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
)
MODEL_SIZES = ("tiny", "vit-s", "vit-b", "vit-l")
DEFAULTS = {"model_size": "vit-b", "batch_size": 256, "steps": 10, "warmup_steps": 3, "repeats": 3}
QUICK = {"model_size": "tiny", "batch_size": 16, "steps": 2, "warmup_steps": 1, "repeats": 2}
TOKEN_ID_POOL = 1000  # random captions use BPE ids 1..1000: they fit a tiny model's compact vocabulary
N_CLASSES = 4  # random labels; class 0 is forgotten, so a quarter of the pairs are forget pairs
DISTRIBUTED_TIME_LIMIT_S = 180.0


# ---------------------------------------------------------------------------------- inputs
def random_features(rows: int, dim: int, *, generator: torch.Generator) -> torch.Tensor:
    """Float32 features ``(rows, dim)`` with row norms spread log-uniformly over [0.5, 3]."""
    directions = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)
    norms = torch.logspace(math.log10(0.5), math.log10(3.0), rows)[torch.randperm(rows, generator=generator)]
    return directions * norms[:, None]


def random_tokens(rows: int, context_length: int, *, generator: torch.Generator) -> torch.Tensor:
    """Token sequences ``(rows, context_length)`` shaped like real captions: start, 1 to
    ``context_length - 2`` random BPE ids, end, zero padding."""
    tokens = torch.zeros(rows, context_length, dtype=torch.long)
    lengths = torch.randint(1, context_length - 1, (rows,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        tokens[row, 0] = BPE_START
        tokens[row, 1:length + 1] = torch.randint(1, TOKEN_ID_POOL + 1, (length,), generator=generator)
        tokens[row, length + 1] = BPE_END
    return tokens


def build_model(name: str, *, seed: int) -> models.ImageTextModel:
    """A freshly initialised ``name`` (seeded), in eval mode; a compact-vocabulary model gets a row
    for every id that :func:`random_tokens` draws."""
    torch.manual_seed(seed)
    model = models.create_model(name)
    if model.config.text.compact_vocabulary:
        model.build_vocabulary(torch.arange(1, TOKEN_ID_POOL + 1))
    return model.eval()


def random_images(rows: int, size: int, *, generator: torch.Generator) -> torch.Tensor:
    """Pixels in [0, 1], ``(rows, 3, size, size)`` float32."""
    return torch.rand(rows, 3, size, size, generator=generator)


# ------------------------------------------------------------------------------ agreement
def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |result - reference| / max(|reference|, 1)`` over all elements (see the module notes);
    NaN or infinity in ``result`` give infinity."""
    result = result.detach().to("cpu", torch.float64)
    if not torch.isfinite(result).all():
        return math.inf
    # Floor at 1: below it the error is read as absolute (random cosines sit near 0).
    scale = reference.abs().clamp_min(1.0)
    return float(((result - reference).abs() / scale).max())


def geometry_ops(geometry) -> dict:
    """Name -> ``op(v, w, x, y)`` for every geometry op checked; ``v, w`` are features ``(n, d)``,
    ``x, y`` the points they lift to."""
    ops = {
        "lift": lambda v, w, x, y: geometry.lift(v),
        "dist": lambda v, w, x, y: geometry.dist(x, y),
        "dist0": lambda v, w, x, y: geometry.dist0(x),
        "cinner": lambda v, w, x, y: geometry.cinner(x, y),
        "cdist": lambda v, w, x, y: geometry.cdist(x, y),
        "csimilarity": lambda v, w, x, y: geometry.csimilarity(x, y),
        "half_aperture": lambda v, w, x, y: geometry.half_aperture(x),
        "oxy_angle": lambda v, w, x, y: geometry.oxy_angle(x, y),
    }
    if isinstance(geometry, Lorentz):
        tangent = lambda v: torch.cat([torch.zeros_like(v[:, :1]), v], dim=-1)  # noqa: E731  (at the origin)
        ops.update({
            "expmap0": lambda v, w, x, y: geometry.expmap0(tangent(v)),
            "logmap0": lambda v, w, x, y: geometry.logmap0(x),
        })
    else:
        # CLIP's cones act on unnormalised points (normalised ones all have norm 1).
        ops.update({
            "dist0": lambda v, w, x, y: geometry.dist0(v),
            "half_aperture": lambda v, w, x, y: geometry.half_aperture(v),
            "oxy_angle": lambda v, w, x, y: geometry.oxy_angle(v, w),
        })
    return ops


def geometry_agreement(device: torch.device, *, rows: int = 256, dim: int = 512, seed: int = 0) -> dict:
    """Every op of :func:`geometry_ops` for Lorentz (c = 0.5) and normalised Euclidean, on
    ``device`` in float32 (plain and in bfloat16 autocast) against the CPU in float64."""
    generator = torch.Generator().manual_seed(seed)
    v, w = (random_features(rows, dim, generator=generator) for _ in range(2))
    checks = []
    for name, geometry in (("lorentz", Lorentz(c=0.5)), ("euclidean", Euclidean(normalize=True))):
        with torch.no_grad():
            x, y = geometry.lift(v), geometry.lift(w)  # float32 points, on the manifold to float32 precision
        reference_geometry = copy.deepcopy(geometry).double()
        device_geometry = copy.deepcopy(geometry).to(device)
        reference_ops, device_ops = geometry_ops(reference_geometry), geometry_ops(device_geometry)
        cpu64 = [t.double() for t in (v, w, x, y)]
        on_device = [t.to(device) for t in (v, w, x, y)]
        for op, reference_op in reference_ops.items():
            with torch.no_grad():
                reference = reference_op(*cpu64)
                for precision, autocast_on in (("float32", False), ("float32 in bfloat16 autocast", True)):
                    with autocast(device, enabled=autocast_on):
                        result = device_ops[op](*on_device)
                    error = relative_error(result, reference)
                    checks.append({"geometry": name, "op": op, "precision": precision, "max_rel_error": error,
                                   "passed": error <= GEOMETRY_TOLERANCE})
    return {"reference": "CPU float64", "tolerance": GEOMETRY_TOLERANCE, "rows": rows, "dim": dim,
            "checks": checks, "passed": all(check["passed"] for check in checks)}


@torch.no_grad()
def embed(model, images: torch.Tensor, tokens: torch.Tensor) -> dict:
    """Image embeddings, text embeddings and logits of ``model`` (on the inputs' device)."""
    image_embeddings, text_embeddings = model.encode_image(images), model.encode_text(tokens)
    return {"image embeddings": image_embeddings, "text embeddings": text_embeddings,
            "logits": model.logits(image_embeddings, text_embeddings)}


def forward_agreement(device: torch.device, model_size: str, *, rows: int = 8, seed: int = 0) -> dict:
    """MERU and CLIP of ``model_size`` (same random weights everywhere): one forward on ``device``
    (float32, and bfloat16 autocast) against one on the CPU in float64."""
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for family in ("meru", "clip"):
        model = build_model(f"{family}-{model_size}", seed=seed)
        name = model.config.name
        tokens = random_tokens(rows, model.context_length, generator=generator)
        images = random_images(rows, model.image_size, generator=generator)
        reference = {key: value.double() for key, value in
                     embed(copy.deepcopy(model).double(), images.double(), tokens).items()}
        model.to(device)
        for precision, autocast_on in (("float32", False), ("bfloat16 autocast", True)):
            with autocast(device, enabled=autocast_on):
                outputs = embed(model, images.to(device), tokens.to(device))
            for key, value in outputs.items():
                value = value.to("cpu", torch.float64)
                gap = float((value - reference[key]).abs().max()) if torch.isfinite(value).all() else math.inf
                relative = gap / max(float(reference[key].abs().max()), 1e-12)  # guards an all-zero reference
                checks.append({"model": name, "precision": precision, "output": key, "max_abs_diff": gap,
                               "max_rel_diff": relative, "passed": relative <= FORWARD_TOLERANCE[precision]})
        del model
    return {"reference": "CPU float64", "tolerance": dict(FORWARD_TOLERANCE), "rows": rows, "checks": checks,
            "passed": all(check["passed"] for check in checks)}


# --------------------------------------------------------------------------------- timing
def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention that ``run()`` executes (forward
    and backward), counted by ``torch.utils.flop_counter.FlopCounterMode``; attention goes through
    the math kernel, whose matrix products the counter sees on every device (the fused CPU kernel
    is not in its registry)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with sdpa_kernel([SDPBackend.MATH]), counter:
        run()
    return int(counter.get_total_flops())


def unlearning_data(model, rows: int, *, seed: int) -> unlearning.UnlearningData:
    """``rows`` random image–caption pairs for ``model``, labels cycling over ``N_CLASSES`` classes
    (two parents), class 0 marked to forget."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(rows) % N_CLASSES
    parent_tokens = random_tokens(2 * 2, model.context_length, generator=generator)
    return unlearning.UnlearningData(
        images=random_images(rows, model.image_size, generator=generator),
        tokens=random_tokens(rows, model.context_length, generator=generator),
        labels=labels, forget=labels == 0, class_parents=torch.arange(N_CLASSES) // 2,
        parent_prompt_tokens=list(parent_tokens.split(2)),
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> tuple:
    """``(bytes, what was measured)``: CUDA's allocator peak since the last reset, or the process's
    resident-memory peak on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process RSS peak so far (ru_maxrss)"


def time_method(model, data, objective: str, device: torch.device, *, batch_size: int, steps: int,
                warmup_steps: int, repeats: int, seed: int = 0) -> dict:
    """Seconds per ``unlearn`` step of ``objective`` on ``model`` (see the module notes), samples
    per second, peak memory and FLOPs per step."""
    mixed_precision = device.type == "cuda"

    def call(n_steps: int) -> float:
        synchronize(device)
        began = time.perf_counter()
        unlearning.unlearn(model, data, objective, steps=n_steps, batch_size=batch_size, seed=seed,
                           forget_fraction=1 / N_CLASSES, device=device, progress=False,
                           mixed_precision=mixed_precision)
        synchronize(device)
        return time.perf_counter() - began

    call(warmup_steps)  # untimed: first-call costs (kernel selection, allocator growth)
    short_calls, long_calls = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        short_calls.append(call(warmup_steps))
        long_calls.append(call(warmup_steps + steps))
    memory, memory_kind = peak_memory(device)
    step_seconds = (statistics.median(long_calls) - statistics.median(short_calls)) / steps
    method = "difference of medians"
    if not step_seconds > 0:
        step_seconds = statistics.median(long_calls) / (warmup_steps + steps)
        method = "long call / its steps (the difference was not positive: timing noise)"
    flops = count_flops(lambda: call(1))
    return {"model": model.config.name, "objective": objective, "batch_size": batch_size, "steps": steps,
            "warmup_steps": warmup_steps, "repeats": repeats, "short_call_seconds": short_calls,
            "long_call_seconds": long_calls, "step_seconds": step_seconds, "step_time_method": method,
            "samples_per_second": batch_size / step_seconds, "peak_memory_bytes": memory,
            "peak_memory_kind": memory_kind, "flops_per_step": flops,
            "achieved_tflops": flops / step_seconds / 1e12}


def peak_bf16_tflops(device: torch.device, override: Optional[float] = None) -> tuple:
    """``(TFLOP/s or None, where it came from)``: ``override``, else ``PEAK_BF16_TFLOPS`` by device
    name; ``None`` on the CPU and on unknown GPUs."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown (CPU)"
    return peak_for_device_name(torch.cuda.get_device_name(device))


def peak_for_device_name(name: str) -> tuple:
    """``(TFLOP/s or None, where it came from)`` for a CUDA device name such as ``"NVIDIA H200"``."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"table ({key})"
    return None, f"unknown ({name} is not in the table; pass --peak-tflops)"


def step_timing(device: torch.device, model_size: str, *, batch_size: int, steps: int, warmup_steps: int,
                repeats: int, peak_tflops: Optional[float] = None, seed: int = 0) -> dict:
    """HAC on MERU against FT on CLIP: :func:`time_method` for both, their step-time ratio and MFU."""
    peak, peak_source = peak_bf16_tflops(device, peak_tflops)
    methods = {}
    for objective, family in (("hac", "meru"), ("ft", "clip")):
        name = f"{family}-{model_size}"
        model = build_model(name, seed=seed).to(device)
        data = unlearning_data(model, batch_size, seed=seed)
        timing = time_method(model, data, objective, device, batch_size=batch_size, steps=steps,
                             warmup_steps=warmup_steps, repeats=repeats, seed=seed)
        timing["peak_tflops"] = peak
        timing["mfu"] = timing["achieved_tflops"] / peak if peak else "unknown"
        methods[objective] = timing
        del model, data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ratio = methods["hac"]["step_seconds"] / methods["ft"]["step_seconds"]
    return {"methods": methods, "step_time_ratio_hac_over_ft": ratio, "peak_tflops": peak,
            "peak_tflops_source": peak_source,
            "precision": "bfloat16 autocast" if device.type == "cuda" else "float32"}


# ---------------------------------------------------------------------------- distributed
def run_with_time_limit(command: list, *, time_limit_s: float, cwd=None) -> dict:
    """Run ``command``; ``status`` passed / failed / timed out, with its exit status, seconds and the
    end of its output. On timeout its whole process group (it and the workers it started) is ended."""
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=time_limit_s)
        status = "passed" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        status = "timed out"
    return {"status": status, "returncode": process.returncode, "seconds": time.perf_counter() - began,
            "command": " ".join(command), "time_limit_s": time_limit_s, "output_tail": (output or "")[-2000:]}


def distributed_smoke(device: torch.device, *, time_limit_s: float = DISTRIBUTED_TIME_LIMIT_S) -> dict:
    """With more than one GPU: two-process ``torchrun`` pretraining for 20 steps (see the module
    notes); otherwise ``skipped``. Never raises for a failing command."""
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count < 2:
        return {"status": "skipped", "reason": f"needs 2 GPUs, {count} on {device.type}"}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m",
                   "benchmarks.pretrain", "--geometry", "lorentz", "--dataset", "shapes", "--steps", "20",
                   "--out", str(Path(folder) / "model.pt"), "--no-progress"]
        try:
            return run_with_time_limit(command, time_limit_s=time_limit_s, cwd=Path(__file__).resolve().parents[1])
        except OSError as error:  # the command could not start at all: recorded, not raised
            return {"status": "failed", "reason": f"could not start: {error}", "command": " ".join(command)}


# ------------------------------------------------------------------------------- reporting
def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "cuda": torch.version.cuda, "gpu_count": torch.cuda.device_count(),
            "cpu_threads": torch.get_num_threads(), "python": platform.python_version()}


def format_table(report: dict) -> str:
    """The report as readable text: environment, each check, elapsed time."""
    env = report["environment"]
    lines = [f"device {env['device']} ({env['device_name']}), torch {env['torch']}, CUDA {env['cuda']}, "
             f"{env['gpu_count']} GPU(s)"]
    for name, title, format_section in SECTIONS:
        section = report[name]
        lines.append("")
        if "error" in section:
            lines.append(f"{title}: ERROR {section['error']}")
        else:
            lines += format_section(section)
    seconds = ", ".join(f"{name.replace('_', ' ')} {value:.0f} s" for name, value in report["check_seconds"].items())
    budget = "" if report["within_budget"] else ", EXCEEDED"
    lines += ["", f"seconds per check: {seconds}",
              f"elapsed {report['elapsed_seconds']:.1f} s (budget {report['time_budget_seconds']:.0f} s{budget}); "
              f"checks (the distributed smoke aside) {_verdict(report['passed'])}"]
    return "\n".join(lines)


def _geometry_lines(geometry: dict) -> list:
    lines = [f"geometry agreement vs {geometry['reference']} ({geometry['rows']} x {geometry['dim']}, "
             f"tolerance {geometry['tolerance']:g}; ! = over it): {_verdict(geometry['passed'])}",
             f"  {'geometry':<10} {'op':<14} {'float32':>10} {'in bf16 autocast':>17}"]
    by_op: dict = {}
    for check in geometry["checks"]:
        by_op.setdefault((check["geometry"], check["op"]), {})[check["precision"]] = check
    for (name, op), pair in by_op.items():
        plain, inside = pair["float32"], pair["float32 in bfloat16 autocast"]
        lines.append(f"  {name:<10} {op:<14} {_error(plain):>10} {_error(inside):>17}")
    return lines


def _forward_lines(forward: dict) -> list:
    tolerances = ", ".join(f"{k} {v:g}" for k, v in forward["tolerance"].items())
    lines = [f"forward agreement vs {forward['reference']} ({forward['rows']} pairs; relative tolerance "
             f"{tolerances}): {_verdict(forward['passed'])}",
             f"  {'model':<12} {'precision':<18} {'output':<16} {'max abs diff':>12} {'max rel diff':>12}"]
    for check in forward["checks"]:
        lines.append(f"  {check['model']:<12} {check['precision']:<18} {check['output']:<16} "
                     f"{check['max_abs_diff']:>12.3g} {check['max_rel_diff']:>12.3g}"
                     + ("" if check["passed"] else "  FAIL"))
    return lines


def _timing_lines(timing: dict) -> list:
    lines = [f"step timing ({timing['precision']}; peak {timing['peak_tflops'] or 'unknown'} TFLOP/s, "
             f"{timing['peak_tflops_source']})",
             f"  {'method':<20} {'batch':>5} {'step ms':>9} {'samples/s':>10} {'peak MiB':>9} "
             f"{'GFLOP/step':>11} {'TFLOP/s':>8} {'MFU':>8}"]
    for objective, method in timing["methods"].items():
        mfu = method["mfu"] if isinstance(method["mfu"], str) else f"{method['mfu']:.1%}"
        lines.append(f"  {objective + ' on ' + method['model']:<20} {method['batch_size']:>5} "
                     f"{1e3 * method['step_seconds']:>9.1f} {method['samples_per_second']:>10.1f} "
                     f"{method['peak_memory_bytes'] / 2**20:>9.0f} {method['flops_per_step'] / 1e9:>11.1f} "
                     f"{method['achieved_tflops']:>8.3f} {mfu:>8}")
        if method["step_time_method"] != "difference of medians":
            lines.append(f"    step time: {method['step_time_method']}")
    memory_kind = next(iter(timing["methods"].values()))["peak_memory_kind"]
    lines.append(f"  step-time ratio HAC / FT: {timing['step_time_ratio_hac_over_ft']:.2f}x (memory: {memory_kind})")
    return lines


def _distributed_lines(distributed: dict) -> list:
    detail = distributed.get("reason") or f"exit {distributed.get('returncode')}, {distributed.get('seconds', 0):.0f} s"
    return [f"distributed smoke (torchrun, 2 processes): {distributed['status']} ({detail})"]


# Report key, title, table lines: in the order the checks run.
SECTIONS = (
    ("geometry_agreement", "geometry agreement", _geometry_lines),
    ("forward_agreement", "forward agreement", _forward_lines),
    ("step_timing", "step timing", _timing_lines),
    ("distributed", "distributed smoke", _distributed_lines),
)


def _verdict(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def _error(check: dict) -> str:
    return f"{check['max_rel_error']:.2e}" + ("" if check["passed"] else "!")


# -------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cuda[:N] or cpu (default: %(default)s)")
    parser.add_argument("--out", default="runs/gpu_check.json", help="JSON report (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: 256; --quick 16)")
    parser.add_argument("--model-size", choices=MODEL_SIZES, default=None,
                        help="meru-/clip- model size (default: vit-b; --quick tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per call (default: 10; --quick 2)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="steps of the short call (default: 3; --quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed call pairs per method (default: 3; --quick 2)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bfloat16 peak in TFLOP/s (default: looked up by name)")
    parser.add_argument("--time-budget", type=float, default=360.0,
                        help="seconds the whole check should take; reported, not enforced (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU-friendly: tiny models, batch 16, 2 steps after 1, 2 repeats (explicit options "
                        "still win)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def check_args(args) -> None:
    """Raise :class:`InputError` naming the first option out of range."""
    if args.batch_size < N_CLASSES:
        raise InputError(f"--batch-size must be at least {N_CLASSES} (one forget pair and retain pairs), "
                         f"got {args.batch_size}")
    for option in ("steps", "warmup_steps", "repeats"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise InputError(f"--peak-tflops must be positive, got {args.peak_tflops}")


def run_checks(args, device: torch.device) -> dict:
    """Every check in order; the report as written to JSON (without the elapsed time)."""
    quick = args.model_size == "tiny"
    report = {"environment": environment(device),
              "settings": {key: getattr(args, key) for key in
                           ("model_size", "batch_size", "steps", "warmup_steps", "repeats", "quick")}}
    checks = {
        "geometry_agreement": lambda: geometry_agreement(device, rows=64 if quick else 256, dim=64 if quick else 512),
        "forward_agreement": lambda: forward_agreement(device, args.model_size, rows=4 if quick else 8),
        "step_timing": lambda: step_timing(device, args.model_size, batch_size=args.batch_size, steps=args.steps,
                                           warmup_steps=args.warmup_steps, repeats=args.repeats,
                                           peak_tflops=args.peak_tflops),
        "distributed": lambda: distributed_smoke(device),
    }
    report["check_seconds"] = {}
    for name, check in checks.items():
        began = time.perf_counter()
        tell(f"gpu_check: {name.replace('_', ' ')} ...")
        try:
            report[name] = check()
        except Exception as error:  # noqa: BLE001  (one broken check must not lose the others' numbers)
            report[name] = {"error": f"{type(error).__name__}: {error}", "passed": False}
            tell(f"gpu_check: {name} failed: {type(error).__name__}: {error}")
        report["check_seconds"][name] = time.perf_counter() - began
    report["passed"] = all(report[name].get("passed", True) for name in checks if name != "distributed")
    return report


def main(argv=None) -> int:
    """Run the check; 0 when every agreement check passed and no check raised, 1 otherwise, 2 for a
    bad option. A check that raises is recorded as ``{"error": ...}`` and the others still run."""
    began = time.perf_counter()
    args = parse_args(argv)
    try:
        check_args(args)
        device = resolve_device(args.device)
    except ValueError as error:  # InputError and resolve_device's errors: the user can fix them
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = run_checks(args, device)
    report["elapsed_seconds"] = time.perf_counter() - began
    report["time_budget_seconds"] = args.time_budget
    report["within_budget"] = report["elapsed_seconds"] <= args.time_budget
    write_json(args.out, report)
    print(format_table(report))
    print(f"report: {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks.gpu_check on the CPU: the quick run's report, exact FLOP counts, the subprocess runner."""

import json
import math
import sys

import pytest
import torch

from benchmarks import gpu_check


@pytest.fixture
def one_thread():
    """One torch thread: the quick run stays fast on a shared two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quick_cpu_run_writes_a_complete_report(tmp_path, one_thread, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())

    assert report["environment"]["device"] == "cpu"
    assert report["settings"] == {"model_size": "tiny", "batch_size": 16, "steps": 2, "warmup_steps": 1,
                                  "repeats": 2, "quick": True}
    geometry = report["geometry_agreement"]
    assert geometry["passed"] and all(check["passed"] for check in geometry["checks"])
    ops = {(check["geometry"], check["op"]) for check in geometry["checks"]}
    assert {("lorentz", op) for op in ("expmap0", "logmap0", "dist", "cdist", "dist0", "half_aperture",
                                       "oxy_angle")} <= ops
    assert {("euclidean", op) for op in ("cdist", "dist0", "half_aperture", "oxy_angle")} <= ops
    assert len(geometry["checks"]) == 2 * len(ops)  # plain float32 and inside bfloat16 autocast
    forward = report["forward_agreement"]
    assert forward["passed"]
    assert {(c["model"], c["precision"]) for c in forward["checks"]} == {
        (model, precision) for model in ("meru-tiny", "clip-tiny") for precision in ("float32", "bfloat16 autocast")}
    # In float32 the CPU agrees with its own float64 to rounding, far inside the tolerance.
    assert max(c["max_rel_diff"] for c in forward["checks"] if c["precision"] == "float32") < 1e-4

    timing = report["step_timing"]
    assert set(timing["methods"]) == {"hac", "ft"}
    assert timing["methods"]["hac"]["model"] == "meru-tiny" and timing["methods"]["ft"]["model"] == "clip-tiny"
    ratio = timing["step_time_ratio_hac_over_ft"]
    assert ratio > 0 and math.isfinite(ratio)
    for method in timing["methods"].values():
        assert method["flops_per_step"] > 0 and method["step_seconds"] > 0 and method["peak_memory_bytes"] > 0
        assert len(method["long_call_seconds"]) == len(method["short_call_seconds"]) == 2
        assert method["mfu"] == "unknown"  # no bfloat16 peak for a CPU
    # HAC runs everything FT runs plus the frozen original model's forward.
    assert timing["methods"]["hac"]["flops_per_step"] > timing["methods"]["ft"]["flops_per_step"]
    assert report["distributed"]["status"] == "skipped"
    assert report["passed"] is True and report["elapsed_seconds"] > 0

    table = capsys.readouterr().out
    for heading in ("geometry agreement", "forward agreement", "step timing", "distributed smoke", "elapsed"):
        assert heading in table


def test_flop_count_of_a_linear_layer_is_exact():
    layer = torch.nn.Linear(4, 3, bias=False)
    inputs = torch.randn(5, 4)
    # Forward (5x4)@(4x3): 2*5*4*3 = 120; backward, weight gradient only: another 120.
    assert gpu_check.count_flops(lambda: layer(inputs).sum().backward()) == 240
    # With the input's gradient as well: a third product of the same size.
    inputs.requires_grad_()
    assert gpu_check.count_flops(lambda: layer(inputs).sum().backward()) == 360


def test_flop_count_sees_attention_on_the_cpu():
    q, k, v = (torch.randn(2, 3, 4, 8) for _ in range(3))  # (batch, heads, tokens, head width)
    # Scores q k^T and their product with v: 2 * (2*4*4*8) per head and batch element.
    expected = 2 * 3 * 2 * (2 * 4 * 4 * 8)
    assert gpu_check.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)) == expected


def test_peak_table_matches_device_names():
    assert gpu_check.peak_for_device_name("NVIDIA H200")[0] == 989.0
    assert gpu_check.peak_for_device_name("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert gpu_check.peak_for_device_name("NVIDIA H100 PCIe")[0] == 756.0
    assert gpu_check.peak_for_device_name("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert gpu_check.peak_for_device_name("NVIDIA A10G")[0] == 70.0
    assert gpu_check.peak_for_device_name("NVIDIA GeForce GTX 1080")[0] is None
    assert gpu_check.peak_bf16_tflops(torch.device("cpu"), 123.0) == (123.0, "--peak-tflops")
    assert gpu_check.peak_bf16_tflops(torch.device("cpu"))[0] is None


def test_relative_error_reads_small_values_absolutely_and_non_finite_as_infinite():
    reference = torch.tensor([1e-6, 100.0], dtype=torch.float64)
    assert gpu_check.relative_error(torch.tensor([2e-6, 100.0]), reference) == pytest.approx(1e-6, rel=1e-3)
    assert gpu_check.relative_error(torch.tensor([1e-6, 101.0]), reference) == pytest.approx(1e-2, rel=1e-3)
    assert gpu_check.relative_error(torch.tensor([float("nan"), 100.0]), reference) == math.inf


def test_subprocess_runner_records_success_and_failure():
    passed = gpu_check.run_with_time_limit([sys.executable, "-c", "print('ok')"], time_limit_s=60)
    assert passed["status"] == "passed" and passed["returncode"] == 0 and "ok" in passed["output_tail"]
    failed = gpu_check.run_with_time_limit([sys.executable, "-c", "import sys; sys.exit(3)"], time_limit_s=60)
    assert failed["status"] == "failed" and failed["returncode"] == 3


@pytest.mark.parametrize("option", [["--batch-size", "2"], ["--steps", "0"], ["--peak-tflops", "-1"],
                                    ["--device", "tpu"]])
def test_bad_options_exit_with_status_2_and_write_nothing(tmp_path, option, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--quick", "--out", str(out), *option]) == 2
    assert not out.exists()
    assert capsys.readouterr().err.startswith("error: ")


def test_a_check_that_raises_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu_check, "forward_agreement", broken)
    monkeypatch.setattr(gpu_check, "step_timing", broken)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["forward_agreement"] == {"error": "RuntimeError: CUDA error: out of memory", "passed": False}
    assert report["geometry_agreement"]["passed"] and report["distributed"]["status"] == "skipped"
    assert report["passed"] is False
    assert "step timing: ERROR RuntimeError: CUDA error: out of memory" in capsys.readouterr().out

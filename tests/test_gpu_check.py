"""Tests of the GPU check's parts that run without a GPU: benchmarks/sanitize_cuda.py (the cases gpu_check.sh runs
under compute-sanitizer), the HETMM_TEST_DEADLINE hook of tests/conftest.py that ends its pytest steps in time, and
the script's syntax. On a GPU the cases themselves run in gpu_check.sh."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hetmm_fast as hf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sanitize():
    spec = importlib.util.spec_from_file_location("sanitize_cuda", ROOT / "benchmarks" / "sanitize_cuda.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def cuda_ops_in_sources() -> set[str]:
    """Names of the ops csrc registers a CUDA kernel for (TORCH_LIBRARY_IMPL(hetmm, CUDA, m) blocks)."""
    ops = set()
    for path in (ROOT / "csrc").rglob("*.cpp"):
        for block in re.findall(r"TORCH_LIBRARY_IMPL\(hetmm,\s*CUDA,\s*m\)\s*\{(.*?)\}", path.read_text(), re.S):
            ops.update(re.findall(r'm\.impl\("([A-Za-z_]+)"', block))
    return ops


def test_cases_reach_every_cuda_kernel(sanitize):
    ops = cuda_ops_in_sources()
    assert {"window_match", "_window_match_naive", "optics_labels", "pts_select"} <= ops
    families = {k.split(":")[0] for k in sanitize.KERNELS}
    # The tuned op runs the window_match kernels with explicit launch knobs: the warps/splits cases reach it.
    assert "_window_match_cuda_tuned" in ops
    assert {op.lstrip("_").removesuffix("_cuda_tuned") for op in ops} <= families, "a CUDA op has no sanitizer case"
    cases = sanitize.cases()
    assert len({c.name for c in cases}) == len(cases)
    assert {c.kernel for c in cases} == set(sanitize.KERNELS)
    # --quick (racecheck, synccheck) still reaches every kernel and every window_match precision path
    assert {c.kernel for c in cases if c.quick} == set(sanitize.KERNELS)
    assert {f"window_match:{p}" for p in sanitize.DTYPE} <= set(sanitize.KERNELS)


@pytest.mark.skipif(bool(hf.available_backends()["cpu"]), reason="needs the compiled cpu backend")
def test_cases_match_their_oracles_on_the_cpu_backend(sanitize, capsys):
    assert sanitize.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    ran = [c for c in sanitize.cases() if not c.cuda_only]
    assert f"{len(ran)} of {len(ran)} cases passed" in out
    assert all(f"ok   {c.name} " in out for c in ran)


@pytest.mark.skipif(bool(hf.available_backends()["cpu"]), reason="needs the compiled cpu backend")
def test_a_mismatch_is_named_and_fails_the_run(sanitize, monkeypatch, capsys):
    chosen = [c for c in sanitize.cases() if c.name in ("wm_fp64_edges", "optics_tiny")]
    monkeypatch.setattr(sanitize, "cases", lambda: chosen)
    monkeypatch.setitem(sanitize.TOLERANCE, "fp64", -1.0)  # no result can be that close
    assert sanitize.main(["--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "FAIL wm_fp64_edges [window_match:fp64]" in captured.err and "max |got - oracle|" in captured.err
    assert "ok   optics_tiny " in captured.out and "1 of 2 cases passed" in captured.out


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def run_one_test_with_deadline(value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HETMM_TEST_DEADLINE": value}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_gpu_check.py::test_gpu_check_script_parses"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_tests_past_the_deadline_are_skipped_not_run():
    past = run_one_test_with_deadline("1")
    assert past.returncode == 0 and "1 skipped" in past.stdout and "HETMM_TEST_DEADLINE passed" in past.stdout
    future = run_one_test_with_deadline(str(time.time() + 3600))
    assert future.returncode == 0 and "1 passed" in future.stdout
    bad = run_one_test_with_deadline("soon")
    assert bad.returncode == 4 and "HETMM_TEST_DEADLINE must be a Unix time" in bad.stdout + bad.stderr

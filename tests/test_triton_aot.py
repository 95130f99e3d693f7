"""The Triton kernels lowered for real GPUs (sm_80, sm_90) without one: hetmm_fast.triton.aot.

The interpreter tests (test_triton.py) check the kernels' arithmetic but never lower them; a kernel the NVIDIA
backend rejects would first fail on a GPU machine. Here every kernel and dtype/precision path is compiled to a
cubin through Triton's own launch specialisation, and the cubin is checked: it fits the chip's shared memory, and
it uses tensor cores exactly where the numerics say it should (exact fp32 must not go through TF32 MMAs).
On a machine with CUDA these tests skip: the GPU tests compile and run the same kernels for real.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("triton")

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    pytest.skip("ahead-of-time compilation lowers the real kernels; not under TRITON_INTERPRET", allow_module_level=True)
if torch.cuda.is_available():
    pytest.skip("a CUDA device compiles and runs the kernels in the GPU tests", allow_module_level=True)

from hetmm_fast.triton import aot  # noqa: E402

try:
    aot._cuobjdump()
    from triton import knobs  # noqa: E402

    knobs.nvidia.ptxas.path  # noqa: B018  (raises when Triton's NVIDIA tools are missing)
except Exception as e:  # pragma: no cover - depends on the Triton wheel
    pytest.skip(f"Triton's NVIDIA backend tools are missing: {e}", allow_module_level=True)

ARCHS = (80, 90)
VARIANTS = aot.window_match_variants(full=False) + aot.gram_variants(full=False)


def _must_use_mma(v: aot.Variant) -> bool:
    """Whether ``v``'s products must run on tensor cores (True) or must not (False, the exact paths)."""
    if v.kernel == "gram" and v.shape["out"] == "float64":
        return bool(v.shape["fp64_dot"])  # fp64 MMA (DMMA) is exact fp64; the sequential path has no dot at all
    if v.dtype in ("float16", "bfloat16"):
        return True
    if v.dtype == "float64":
        return False  # window_match: fp64 by CUDA-core FMAs, one channel at a time
    return v.precision in ("tf32", "tf32x3")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", VARIANTS, ids=[f"{v.kernel}-{v.label}" for v in VARIANTS])
def test_kernel_compiles_for_gpu(variant, arch):
    r = aot.compile_variant(variant, arch)
    assert r["ok"], r.get("error")
    assert r["fits_shared"], f"{r['shared_bytes']} B of shared memory, sm_{arch} allows {r['shared_limit_bytes']}"
    assert 0 < r["registers"] <= 255
    mmas = r["mma_sync"] + r["wgmma"]
    if _must_use_mma(variant):
        assert mmas > 0, "a tensor-core path compiled without MMA instructions"
    else:
        assert mmas == 0, "an exact path compiled to MMA instructions (TF32 or reduced precision)"


def test_variants_cover_every_dtype_and_precision():
    seen = {(v.dtype, v.precision) for v in VARIANTS if v.kernel == "window_match"}
    assert seen == set(aot._WM_DTYPES)
    assert {v.shape["fwd"] for v in VARIANTS if v.kernel == "window_match"} >= {1, 13, 31}
    assert {(v.dtype, v.shape["out"], v.shape["fp64_dot"]) for v in VARIANTS if v.kernel == "gram"} >= {
        ("float32", "float64", False), ("float32", "float64", True), ("float32", "float32", False)}


def test_failure_is_reported_not_raised():
    v = VARIANTS[0]
    bad = aot.Variant(v.kernel, v.dtype, v.precision, v.shape, dict(v.config, BX=24), "BX not a power of two")
    r = aot.compile_variant(bad, 90)
    assert not r["ok"] and "power of 2" in r["error"]


def test_placeholder_driver_is_removed_after_compiling():
    from triton.runtime import driver

    before = driver._active
    aot.compile_variant(VARIANTS[0], 90)
    assert driver._active is before
    with pytest.raises(ZeroDivisionError):
        with aot._target(80):
            assert driver.active.get_current_target().arch == 80
            1 / 0  # noqa: B018
    assert driver._active is before


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = aot.main(["--arch", "90", "--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    assert rc == 0 and data["versions"]["triton"] and len(data["rows"]) == len(VARIANTS)
    assert all(r["result"]["arch"] == 90 for r in data["rows"])
    assert "compiled within the shared-memory limit" in capsys.readouterr().out

"""Tests of the Triton engine (hetmm_fast.triton).

Triton decides at kernel-definition time whether kernels are compiled for the GPU or run by its CPU interpreter
(``TRITON_INTERPRET=1`` must be set before ``hetmm_fast.triton`` is imported). So:

* with a CUDA device, the in-process tests run the compiled kernels on CUDA tensors;
* with ``TRITON_INTERPRET=1`` in the environment, they run the interpreted kernels on CPU tensors (tiny shapes);
* otherwise (a plain CPU run, e.g. CI), ``test_interpreter_suite`` re-runs this file, plus the triton-parametrised
  tests of test_window_match.py, in a subprocess with ``TRITON_INTERPRET=1``, so the backend is tested without a
  GPU while staying unusable in the normal run (test_pts_select.py's triton cases pass too but are left out for
  time: their cost is scikit-learn's OPTICS, and test_pts_select_equals_reference here covers the Triton route).

GPU-only tests (larger shapes, TF32/fp16/bf16 parity, autotuning, torch.compile through triton_op) are marked
``gpu`` and skip without CUDA.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

import hetmm_fast as hf  # noqa: E402
from hetmm_fast import _backends  # noqa: E402
from hetmm_fast.reference.window_match import window_match as reference_window_match  # noqa: E402
from hetmm_fast.testing import (  # noqa: E402
    brute_window_match,
    noncontiguous,
    reduction_tol,
    tf32_truncate,
    unit_features,
)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
CUDA = torch.cuda.is_available() and not INTERPRET
IN_PROCESS = INTERPRET or CUDA
DEVICE = "cuda" if CUDA else "cpu"
REPO = Path(__file__).resolve().parents[1]

if IN_PROCESS:
    import hetmm_fast.triton as ht
    wm = ht.window_match

in_process = pytest.mark.skipif(
    not IN_PROCESS, reason="needs CUDA or TRITON_INTERPRET=1 (covered here by test_interpreter_suite)"
)
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
TOL32 = reduction_tol(64)  # testing.py rule 1: exact float32 vs the float64 oracle, unit vectors, C <= 64


def feats(shape, dtype=torch.float32, seed=0):
    return unit_features(shape, dtype, seed=seed, device=DEVICE)


def assert_matches_brute(q, t, kf, kb, got, atol=TOL32):
    ef, eb = brute_window_match(q.cpu(), t.cpu(), kf, kb)
    fwd, bwd = got
    assert fwd.dtype == bwd.dtype == torch.float32
    assert fwd.shape == bwd.shape == (q.shape[0], q.shape[2], q.shape[3])
    assert fwd.device == q.device and bwd.device == q.device
    torch.testing.assert_close(fwd.cpu().double(), ef, atol=atol, rtol=0)
    torch.testing.assert_close(bwd.cpu().double(), eb, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------- the subprocess driver
@pytest.mark.skipif(IN_PROCESS, reason="this process already runs the triton tests in-process")
def test_interpreter_suite():
    """Run the Triton tests under the interpreter in a fresh process (the mode is fixed when kernels are defined)."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.pop("HETMM_BACKEND", None)
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton",
        "tests/test_triton.py", "tests/test_window_match.py",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"interpreter suite failed ({' '.join(cmd)}):\n{tail}"
    assert " passed" in proc.stdout and "test_interpreter_suite" not in proc.stdout, tail


# ------------------------------------------------------------------------------------------- registration, can_run
@in_process
def test_backend_registered_and_chosen():
    assert hf.available_backends()["triton"] == []
    q, t = feats((1, 4, 3, 3)), feats((2, 4, 3, 3), seed=1)
    assert _backends.reasons("window_match", "triton", (q, t)) == []
    assert _backends.reasons("pts_select", "triton", (t,)) == []
    if _backends.reasons("window_match", "cuda", (q, t)):  # the ladder is cuda > triton > cpu > torch
        assert _backends.select("window_match", None, (q, t))[0] == "triton"
    assert ht.INTERPRET == INTERPRET
    assert hasattr(torch.ops.hetmm, "window_match_triton")


@in_process
def test_can_run_reasons(monkeypatch):
    q = feats((1, 4, 3, 3))
    assert wm.can_run((q.int(),)) == ["unsupported dtype torch.int32"]
    meta = torch.empty((1, 4, 3, 3), device="meta")
    assert any("inputs on meta" in r for r in wm.can_run((meta,)))
    monkeypatch.setattr(wm, "INTERPRET", False)
    if not torch.cuda.is_available():
        why = wm.can_run((q.cpu(),))
        assert any("inputs on cpu" in r and "TRITON_INTERPRET=1" in r for r in why) and "no CUDA device" in why
        with pytest.raises(RuntimeError, match="triton.*cannot run: inputs on cpu"):
            wm.window_match(q.cpu(), q.cpu(), 3, 3)


@pytest.mark.skipif(IN_PROCESS, reason="triton is meant to be usable here")
def test_not_usable_without_gpu_or_interpreter():
    """The normal CPU run must not offer triton, or the shared backend-parametrised tests would try it."""
    assert "no CUDA device" in hf.available_backends()["triton"]
    assert _backends.reasons("window_match", "triton", (unit_features((1, 2, 2, 2)),) * 2) != []


# ---------------------------------------------------------------------------------------------------- window_match
SHAPES = [  # (B, N, C, H, W, kf, kb)
    (1, 1, 4, 1, 1, 1, 1),  # 1x1 map
    (1, 2, 3, 1, 5, 3, 5),  # one row
    (2, 3, 8, 5, 7, 3, 5),  # non-square, B > 1
    (1, 4, 16, 4, 9, 13, 7),  # windows larger than the map
    (3, 2, 20, 3, 4, 5, 1),  # C > the interpreter's channel chunk (16): chunked reduction
    (2, 2, 6, 2, 18, 3, 3),  # W > the interpreter's row segment (16): two x-blocks, halo across them
]


@in_process
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_window_match_vs_brute(shape):
    B, N, C, H, W, kf, kb = shape
    q, t = feats((B, C, H, W), seed=1), feats((N, C, H, W), seed=2)
    assert_matches_brute(q, t, kf, kb, hf.window_match(q, t, kf, kb, backend="triton"))


@in_process
@pytest.mark.parametrize("kf, kb", [(1, 13), (3, 11), (5, 9), (7, 7), (9, 5), (11, 3), (13, 1)])
def test_every_window_size_with_border_clipping(kf, kb):
    """Windows 1..13 on a 6x7 map: most pixels have clipped windows in at least one direction."""
    q, t = feats((1, 5, 6, 7), seed=3), feats((2, 5, 6, 7), seed=4)
    assert_matches_brute(q, t, kf, kb, wm.window_match(q, t, kf, kb))


@in_process
def test_directions_are_not_swapped():
    """A vector planted at query (0, 0) and template (0, 3): forward at the query pixel sees it with kf = 7 (reach 3),
    backward at the template pixel does not with kb = 1, and vice versa."""
    q = torch.zeros(1, 2, 1, 5, device=DEVICE)
    t = torch.zeros(1, 2, 1, 5, device=DEVICE)
    q[0, 1] = 1.0
    t[0, 1] = -1.0
    q[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    t[0, :, 0, 3] = torch.tensor([1.0, 0.0])
    f, b = wm.window_match(q, t, 7, 1)
    assert f[0, 0, 0].item() == 1.0 and b[0, 0, 3].item() == 0.0
    f, b = wm.window_match(q, t, 1, 7)
    assert f[0, 0, 0].item() == 0.0 and b[0, 0, 3].item() == 1.0
    assert f[0, 0, 1].item() == -1.0  # anti-parallel everywhere else: the -1 floor


@in_process
@pytest.mark.parametrize("config", wm.GPU_CONFIGS + (wm.INTERPRETER_CONFIG,) if IN_PROCESS else [None],
                         ids=lambda c: "BX{BX}-NB{NB}-BC{BC}-w{num_warps}".format(**c) if c else "none")
def test_every_tile_config(config):
    """Each autotuner candidate gives the oracle's answer: padded images (B=3 vs NB=2, 4), x-blocks, C chunks."""
    q, t = feats((3, 40, 2, 20), seed=5), feats((2, 40, 2, 20), seed=6)
    got = wm.launch_with_config(q, t, 5, 3, **config)
    assert_matches_brute(q, t, 5, 3, got)


@in_process
def test_autotuned_configs_follow_the_environment(monkeypatch):
    monkeypatch.delenv("HETMM_TRITON_CONFIGS", raising=False)
    assert wm.tuned_configs() == wm.GPU_CONFIGS
    monkeypatch.setenv("HETMM_TRITON_CONFIGS", "5, 0,5")
    assert wm.tuned_configs() == (wm.GPU_CONFIGS[5], wm.GPU_CONFIGS[0])
    configs = wm._configs(interpret=False)
    assert [(c.kwargs["BX"], c.kwargs["NB"], c.kwargs["BC"], c.num_warps, c.num_stages) for c in configs] == [
        tuple(wm.GPU_CONFIGS[i][k] for k in ("BX", "NB", "BC", "num_warps", "num_stages")) for i in (5, 0)]
    for bad in ("8", "-1", "a", "1,,2", "0;1"):
        monkeypatch.setenv("HETMM_TRITON_CONFIGS", bad)
        with pytest.raises(ValueError, match=r"HETMM_TRITON_CONFIGS must be comma-separated indices .*0\.\.7"):
            wm.tuned_configs()


@in_process
def test_wide_window_uses_several_column_tiles(monkeypatch):
    """With the column tile capped at 16, a 13-wide window on a 9-wide map needs two tiles per row."""
    monkeypatch.setattr(wm, "MAX_BT", 16)
    q, t = feats((1, 6, 3, 9), seed=7), feats((2, 6, 3, 9), seed=8)
    got = wm.launch_with_config(q, t, 13, 9, BX=16, NB=1, BC=16)
    assert_matches_brute(q, t, 13, 9, got)


@in_process
def test_float64_inputs_computed_in_float64():
    q, t = feats((2, 7, 4, 5), torch.float64, seed=9), feats((3, 7, 4, 5), torch.float64, seed=10)
    fwd, bwd = wm.window_match(q, t, 5, 3)
    ef, eb = brute_window_match(q.cpu(), t.cpu(), 5, 3)
    # Only the final rounding to float32 (half an ulp of values <= 1) separates them from the fp64 oracle.
    torch.testing.assert_close(fwd.cpu().double(), ef, atol=6e-8, rtol=0)
    torch.testing.assert_close(bwd.cpu().double(), eb, atol=6e-8, rtol=0)


@in_process
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_reference(dtype):
    """STYLE rule 5: error <= 2 x the same-dtype reference's error, both against the fp64 oracle."""
    q64, t64 = feats((2, 24, 4, 5), torch.float64, seed=11), feats((3, 24, 4, 5), torch.float64, seed=12)
    exact = brute_window_match(q64.cpu(), t64.cpu(), 5, 3)
    q, t = q64.to(dtype), t64.to(dtype)
    ref = reference_window_match(q, t, 5, 3)
    got = wm.window_match(q, t, 5, 3)
    for g, r, e in zip(got, ref, exact):
        ref_err = (r.cpu().double() - e).abs().max().item()
        assert (g.cpu().double() - e).abs().max().item() <= 2 * ref_err + 1e-6


@in_process
def test_noncontiguous_inputs_give_identical_results():
    q, t = feats((2, 6, 3, 4), seed=13), feats((3, 6, 3, 4), seed=14)
    want = wm.window_match(q, t, 3, 5)
    for qq, tt in ((noncontiguous(q), noncontiguous(t)), (q, noncontiguous(t)), (q.transpose(2, 3).contiguous()
                                                                                 .transpose(2, 3), t)):
        assert not (qq.is_contiguous() and tt.is_contiguous())
        got = wm.window_match(qq, tt, 3, 5)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@in_process
def test_deterministic():
    q, t = feats((2, 8, 4, 6), seed=15), feats((3, 8, 4, 6), seed=16)
    a, b = wm.window_match(q, t, 5, 3), wm.window_match(q, t, 5, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@in_process
def test_precision_argument(monkeypatch):
    q, t = feats((1, 4, 3, 3)), feats((1, 4, 3, 3), seed=1)
    with pytest.raises(ValueError, match="precision must be one of"):
        wm.window_match(q, t, 3, 3, precision="fp8")
    with pytest.raises(ValueError, match="fwd_window must be a positive odd int"):
        wm.window_match(q, t, 2, 3)
    assert wm.default_precision() == "ieee"
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert wm.default_precision() == "tf32"
    finally:
        torch.set_float32_matmul_precision(old)


@in_process
@pytest.mark.parametrize("ours, theirs", [("exact", "ieee"), ("tf32", "tf32")])
def test_public_wrapper_passes_precision_through(ours, theirs, monkeypatch):
    """hf.window_match(precision=...) reaches the Triton kernel as its fp32 dot precision; None maps torch's."""
    q, t = feats((1, 4, 3, 3)), feats((2, 4, 3, 3), seed=1)
    seen = []
    real = wm.window_match

    def spy(*args, precision=None):
        seen.append(precision)
        return real(*args, precision=precision)

    monkeypatch.setattr(wm, "window_match", spy)
    hf.window_match(q, t, 3, 3, backend="triton", precision=ours)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest" if ours == "exact" else "high")
        hf.window_match(q, t, 3, 3, backend="triton")
    finally:
        torch.set_float32_matmul_precision(old)
    assert seen == [theirs, theirs]
    with pytest.raises(ValueError, match="precision must be one of"):
        wm.engine(q, t, 3, 3, "ieee")  # the op's values, not the kernel's


@in_process
def test_library_op_opcheck():
    q, t = feats((1, 5, 2, 3), seed=17), feats((2, 5, 2, 3), seed=18)
    torch.library.opcheck(torch.ops.hetmm.window_match_triton.default, (q, t, 3, 5, "ieee"))


@in_process
def test_torch_compile_fullgraph():
    """The op traces into a full graph (under the interpreter it is an opaque custom op with a fake; on a GPU the
    triton_op exposes the kernel to Inductor)."""
    q, t = feats((1, 4, 3, 5), seed=19), feats((2, 4, 3, 5), seed=20)

    def anomaly(q, t):
        f, b = torch.ops.hetmm.window_match_triton(q, t, 3, 3, "ieee")
        return 1 - 0.5 * (f + b)

    compiled = torch.compile(anomaly, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    torch.testing.assert_close(compiled(q, t), anomaly(q, t), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------- distances and PTS
def torch_gram(t, start=0, stop=None):
    x = t.cpu().double()
    N, C, H, W = x.shape
    x = x.permute(2, 3, 0, 1).reshape(H * W, N, C)[start:stop]
    return x @ x.transpose(1, 2)


@in_process
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (5, 7, 2, 3), (20, 19, 3, 2), (40, 6, 1, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gram_float64_vs_torch(shape):
    """Sequential fp64 sums: equal to torch's fp64 Gram up to summation order, exactly symmetric."""
    t = feats(shape, seed=21)
    g = ht.pixel_gram(t)
    assert g.dtype == torch.float64 and g.shape == (shape[2] * shape[3], shape[0], shape[0])
    torch.testing.assert_close(g.cpu(), torch_gram(t), atol=1e-15, rtol=0)
    assert torch.equal(g, g.transpose(1, 2))


@in_process
def test_gram_variants_and_distances():
    t = feats((18, 21, 2, 3), seed=22)
    want = torch_gram(t)
    torch.testing.assert_close(ht.pixel_gram(t, fp64_dot=True).cpu(), want, atol=1e-15, rtol=0)
    g32 = ht.pixel_gram(t, torch.float32)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.cpu().double(), want, atol=2e-6, rtol=0)
    d = ht.pixel_distances(t)
    assert torch.equal(d, torch.clamp(1.0 - ht.pixel_gram(t), min=0.0))
    g, d2 = ht.gram_and_distances(t, start=2, stop=5)
    assert g.shape == (3, 18, 18)
    assert torch.equal(g, ht.pixel_gram(t)[2:5]) and torch.equal(d2, d[2:5])
    assert (d >= 0).all()


@in_process
def test_gram_duplicates_and_layouts():
    """Duplicated template vectors give bit-identical rows; strides (channels-last views, fp16 input) are handled."""
    t = feats((9, 10, 2, 2), seed=23)
    t[7] = t[2]
    g = ht.pixel_gram(t)
    assert torch.equal(g[:, 7], g[:, 2]) and torch.equal(g[:, :, 7], g[:, :, 2])
    assert torch.equal(ht.pixel_gram(noncontiguous(t)), g)
    for low in (t.half(), t.bfloat16()):  # widened exactly, then summed in fp64
        torch.testing.assert_close(ht.pixel_gram(low).cpu(), torch_gram(low), atol=1e-15, rtol=0)
        torch.testing.assert_close(ht.pixel_gram(low, fp64_dot=True).cpu(), torch_gram(low), atol=1e-15, rtol=0)
    t64 = feats((5, 9, 1, 2), torch.float64, seed=24)  # fp64 input stays fp64
    torch.testing.assert_close(ht.pixel_gram(t64).cpu(), torch_gram(t64), atol=1e-15, rtol=0)
    torch.testing.assert_close(ht.pixel_gram(t.bfloat16(), torch.float32).cpu().double(), torch_gram(t.bfloat16()),
                               atol=2e-6, rtol=0)


@in_process
@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32 or torch.float64"),
        (dict(start=3, stop=3), ValueError, "need 0 <= start < stop <= H\\*W = 4"),
        (dict(stop=5), ValueError, "need 0 <= start < stop"),
        (dict(start=1.0), TypeError, "start must be an int"),
        (dict(precision="bf16"), ValueError, "precision must be one of"),
    ],
)
def test_gram_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        ht.pixel_gram(feats((3, 2, 2, 2)), **kwargs)


@in_process
@pytest.mark.parametrize("n, size, seed", [(16, 4, 0), (11, 3, 1)])
def test_pts_select_equals_reference(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 5, 2, 3, generator=g, dtype=torch.float64)
    x = centres[torch.randint(0, 3, (n,), generator=g)] + 0.3 * torch.randn(n, 5, 2, 3, generator=g,
                                                                            dtype=torch.float64)
    x[-1] = x[0]  # an exact duplicate: a tie the selection must break to the smallest index
    t = torch.nn.functional.normalize(x, dim=1).float()
    want = hf.pts_select(t, size, backend="torch", return_indices=True)[1]
    sel, idx = hf.pts_select(t.to(DEVICE), size, backend="triton", return_indices=True)
    assert idx.device == sel.device == torch.device(DEVICE)
    assert torch.equal(idx.cpu(), want)


# -------------------------------------------------------------------------------------------------- GPU only
def _gpu_pair(B, N, C, H, W, dtype=torch.float32, seed=0):
    return feats((B, C, H, W), dtype, seed), feats((N, C, H, W), dtype, seed + 1)


@gpu
@pytest.mark.parametrize("B", [1, 5])
def test_gpu_fp32_exact_vs_reference(B):
    q, t = _gpu_pair(B, 12, 256, 24, 20, seed=30)
    want = reference_window_match(q.double(), t.double(), 13, 7)  # exact for these fp32 inputs, rounded to fp32
    got = wm.window_match(q, t, 13, 7, precision="ieee")
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=3e-6, rtol=0)


@gpu
@pytest.mark.parametrize("dtype, precision", [(torch.float32, "tf32"), (torch.float32, "tf32x3"),
                                              (torch.float16, "ieee"), (torch.bfloat16, "ieee")])
def test_gpu_reduced_precision_parity(dtype, precision):
    """Error vs the fp64 reference <= 2 x that of the same-precision PyTorch reference (TF32 via matmul precision)."""
    q64, t64 = _gpu_pair(4, 16, 256, 32, 32, torch.float64, seed=31)
    exact = reference_window_match(q64, t64, 13, 7)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high" if precision.startswith("tf32") else "highest")
        ref = reference_window_match(q64.to(dtype), t64.to(dtype), 13, 7)
    finally:
        torch.set_float32_matmul_precision(old)
    got = wm.window_match(q64.to(dtype), t64.to(dtype), 13, 7, precision=precision)
    # tl.dot in plain TF32 hands float32 registers to the tensor cores, which read their top 19 bits (truncation);
    # if cuBLAS rounds to nearest instead, its error is about half and the rule above cannot hold. The kernel is then
    # held to TF32 arithmetic on truncated inputs: the float64 oracle on those, within float32 accumulation.
    truncated = exact
    if precision == "tf32":
        truncated = reference_window_match(tf32_truncate(q64.float()).double(), tf32_truncate(t64.float()).double(),
                                           13, 7)
    for g, r, e, tr in zip(got, ref, exact, truncated):
        ref_err = (r.double() - e.double()).abs().max().item()
        err = (g.double() - e.double()).abs().max().item()
        if precision == "tf32" and err > 2 * ref_err + 1e-6:
            assert (g.double() - tr.double()).abs().max().item() <= 1e-5, (err, ref_err)
        else:
            assert err <= 2 * ref_err + 1e-6


@gpu
def test_gpu_autotuned_configs_agree():
    q, t = _gpu_pair(8, 10, 96, 16, 40, seed=32)
    want = wm.window_match(q, t, 13, 7)
    for config in wm.GPU_CONFIGS:
        got = wm.launch_with_config(q, t, 13, 7, **config)
        torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


@gpu
def test_gpu_matches_cuda_engine_when_built():
    q, t = _gpu_pair(3, 20, 128, 32, 32, seed=33)
    why = _backends.reasons("window_match", "cuda", (q, t))
    if why:
        pytest.skip(f"cuda engine cannot run: {why}")
    torch.testing.assert_close(wm.window_match(q, t, 13, 7), hf.window_match(q, t, 13, 7, backend="cuda"),
                               atol=3e-6, rtol=0)


@gpu
def test_gpu_compile_inlines_the_kernel():
    q, t = _gpu_pair(2, 6, 64, 16, 16, seed=34)

    def anomaly(q, t):
        f, b = torch.ops.hetmm.window_match_triton(q, t, 7, 3, "ieee")
        return 1 - 0.3 * f - 0.7 * b

    torch.testing.assert_close(torch.compile(anomaly, fullgraph=True)(q, t), anomaly(q, t), atol=1e-6, rtol=0)


@gpu
def test_gpu_gram_large():
    t = feats((200, 256, 4, 4), seed=35)
    want = torch_gram(t)
    torch.testing.assert_close(ht.pixel_gram(t).cpu(), want, atol=1e-14, rtol=0)
    torch.testing.assert_close(ht.pixel_gram(t, fp64_dot=True).cpu(), want, atol=1e-14, rtol=0)
    torch.testing.assert_close(ht.pixel_gram(t, torch.float32).cpu().double(), want, atol=1e-5, rtol=0)

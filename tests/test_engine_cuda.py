"""Tests of the CUDA engine (hetmm_fast._engine_cuda, csrc/<op>/<op>_cuda.cu).

GPU tests (marked ``gpu``) need the extension built with CUDA and a device of compute capability >= 8.0; they skip
otherwise. They check every precision path of window_match against float64 oracles (exact float32 tightly and
bit-for-bit against the CPU engine; TF32/fp16/bf16 against the oracle on the rounded inputs and by STYLE rule 5),
both directions, windows 1..15, border clipping, B > 1, several template/channel chunks, non-contiguous inputs,
determinism, the naive baseline, optics_labels / pts_select against the CPU engine (identical labels and indices),
and ``torch.library.opcheck`` of every CUDA op. The remaining tests run wherever the extension has CUDA kernels
(the precision and tuning arguments, no process-wide setting, refusal reasons) or check how a missing CUDA build is
reported.

The torch-free kernels are also checked without a GPU by the C++ emulator tests (tests/cpp/*_cuda_emulated.cpp).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hetmm_fast.testing import clustered_templates as _clustered_templates

import hetmm_fast as hf
from hetmm_fast import _backends
from hetmm_fast.presets import PostProcess, Preset, get_preset
from hetmm_fast.reference.window_match import window_match as reference_window_match
from hetmm_fast.testing import (
    brute_window_match,
    clustered_points,
    cosine_distances,
    max_err,
    noncontiguous,
    precision_race,
    reduction_tol,
    same_partition,
    tf32_round,
    unit_features,
)

try:
    from hetmm_fast import _engine_cuda as engine
except ImportError as exc:  # not built, or built without CUDA
    engine = None
    ENGINE_ERROR = str(exc)
else:
    ENGINE_ERROR = ""

CUDA = engine is not None and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
gpu = pytest.mark.skipif(
    not CUDA,
    reason="needs the CUDA engine and a CUDA device of compute capability >= 8.0"
    + (f" ({ENGINE_ERROR})" if ENGINE_ERROR else ""),
)
built = pytest.mark.skipif(engine is None, reason=f"CUDA engine not loaded: {ENGINE_ERROR}")
DEV = "cuda"
TOL32 = reduction_tol(64)  # testing.py rule 1: exact float32 vs the float64 oracle, unit vectors, C <= 64

SHAPES = [  # (B, N, C, H, W, kf, kb)
    (1, 1, 4, 1, 1, 1, 1),  # 1x1 map, window 1, N = 1
    (2, 3, 8, 5, 7, 3, 5),  # non-square, B > 1, backward window larger
    (1, 4, 16, 4, 9, 13, 7),  # windows larger than the map
    (3, 2, 5, 6, 3, 1, 3),  # odd channel count, forward window 1
    (2, 5, 3, 9, 8, 7, 1),  # backward window 1
    (5, 7, 33, 11, 6, 15, 11),  # largest windows, C over a 32-channel chunk
]


def feats(shape, dtype=torch.float32, seed=0):
    return unit_features(shape, dtype, seed=seed, device=DEV)


def cpu_backend_usable() -> bool:
    return not hf.available_backends()["cpu"]


def cpu_fma_build() -> bool:
    """The CPU engine was compiled with AVX2 + FMA: its float32 window_match is then the same FMA chain as the CUDA
    kernel's exact path (a portable build multiplies and adds separately, other bits)."""
    if not cpu_backend_usable():
        return False
    from hetmm_fast import _engine_cpu

    return {"avx2", "fma"} <= _engine_cpu.build_features()


def oracle(q: torch.Tensor, t: torch.Tensor, kf: int, kb: int):
    """SPEC §2 in float64 on the values given (the reference op in float64; exact up to float64 rounding)."""
    f, b = reference_window_match(q.double(), t.double(), kf, kb)
    return f.double(), b.double()


def expected(q: torch.Tensor, t: torch.Tensor, kf: int, kb: int):
    """float64 oracle on CPU: SPEC §2 by definition for small cases, else the float64 reference (itself tested
    against the definition in test_window_match.py)."""
    q, t = q.cpu(), t.cpu()
    if q.shape[0] * q.shape[2] * q.shape[3] * max(kf, kb) ** 2 <= 5000:
        return brute_window_match(q, t, kf, kb)
    return oracle(q, t, kf, kb)


# ---------------------------------------------------------------------------------------------------------------------
# Without a GPU: how the engine reports itself.


def test_unbuilt_or_cpu_only_engine_is_reported():
    why = hf.available_backends()["cuda"]
    if engine is None:
        assert any("extension" in w for w in why), why
    if not torch.cuda.is_available():
        assert "no CUDA device" in why


@built
def test_no_process_wide_settings():
    """Precision and launch knobs are op arguments (STYLE.md rule 12): no setter ops, no setting functions."""
    for name in ("set_precision", "get_precision", "precision", "max_warps", "splits", "_setting"):
        assert not hasattr(engine, name), name
    for op in ("_cuda_set_fp32_precision", "_cuda_fp32_precision", "_cuda_set_window_match_max_warps",
               "_cuda_window_match_max_warps", "_cuda_set_window_match_splits", "_cuda_window_match_splits"):
        assert not hasattr(torch.ops.hetmm, op), op
    schema = str(torch.ops.hetmm._window_match_cuda_tuned.default._schema)
    assert "str precision" in schema and "int max_warps" in schema and "int splits" in schema


@built
def test_fake_kernels_see_precision_and_knobs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, t = torch.empty(2, 8, 5, 4, device="cuda"), torch.empty(3, 8, 5, 4, device="cuda")
        for out in (torch.ops.hetmm.window_match(q, t, 3, 5, "tf32"),
                    torch.ops.hetmm._window_match_cuda_tuned(q, t, 3, 5, "exact", 2, 7)):
            assert all(o.shape == (2, 5, 4) and o.dtype == torch.float32 for o in out)


@built
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bad_precision_and_knobs_are_refused():
    q = feats((1, 8, 3, 3), seed=30)
    message = r"hetmm.window_match \(cuda\): precision must be 'exact' or 'tf32', got 'half'"
    with pytest.raises(ValueError, match=message):
        torch.ops.hetmm.window_match(q, q, 3, 3, "half")
    for knob, bad in (("max_warps", (-1, 3, 8)), ("splits", (-1, 1025))):
        for value in bad:
            kwargs = dict(max_warps=0, splits=0, **{knob: value})
            with pytest.raises(ValueError, match=f"_window_match_cuda_tuned: {knob} must be 0"):
                torch.ops.hetmm._window_match_cuda_tuned(q, q, 3, 3, "exact", kwargs["max_warps"], kwargs["splits"])
    with pytest.raises(ValueError, match="precision must be 'exact' or 'tf32'"):
        engine.window_match_max_channels(torch.float32, "ieee", torch.cuda.current_device())


@built
def test_refusal_reasons_for_cpu_inputs():
    assert set(engine.REGISTERED) == {"window_match", "optics_labels", "pts_select"}
    q = unit_features((1, 4, 3, 3))
    why = _backends.reasons("window_match", "cuda", (q, q))
    assert "inputs on cpu, not cuda" in why
    if not torch.cuda.is_available():
        assert "no CUDA device" in why
        with pytest.raises(RuntimeError, match="backend 'cuda' cannot run"):
            hf.window_match(q, q, 3, 3, backend="cuda")
    assert "inputs on cpu, not cuda" in _backends.reasons("optics_labels", "cuda", (torch.zeros(1, 3, 3).double(),))


# ---------------------------------------------------------------------------------------------------------------------
# window_match


@gpu
@pytest.mark.parametrize("shape", SHAPES)
def test_exact_fp32_matches_brute_force_and_cpu(shape):
    B, N, C, H, W, kf, kb = shape
    q, t = feats((B, C, H, W), seed=1), feats((N, C, H, W), seed=2)
    fwd, bwd = hf.window_match(q, t, kf, kb, backend="cuda", precision="exact")
    assert fwd.shape == bwd.shape == (B, H, W) and fwd.dtype == bwd.dtype == torch.float32
    assert fwd.device == q.device
    ef, eb = expected(q, t, kf, kb)
    torch.testing.assert_close(fwd.cpu().double(), ef, atol=TOL32, rtol=0)
    torch.testing.assert_close(bwd.cpu().double(), eb, atol=TOL32, rtol=0)
    if cpu_fma_build():  # same FMA chain as the CPU engine's fast path
        cf, cb = hf.window_match(q.cpu(), t.cpu(), kf, kb, backend="cpu")
        assert torch.equal(fwd.cpu(), cf) and torch.equal(bwd.cpu(), cb)


@gpu
@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_float64_matches_brute_force(shape):
    B, N, C, H, W, kf, kb = shape
    q, t = feats((B, C, H, W), torch.float64, seed=3), feats((N, C, H, W), torch.float64, seed=4)
    got = hf.window_match(q, t, kf, kb, backend="cuda")
    assert max_err([g.cpu() for g in got], expected(q, t, kf, kb)) <= 1e-6


@gpu
@pytest.mark.parametrize("kf", range(1, 16, 2))
def test_every_window_both_directions(kf):
    kb = 16 - kf
    q, t = feats((2, 12, 7, 9), seed=5), feats((3, 12, 7, 9), seed=6)
    got = hf.window_match(q, t, kf, kb, backend="cuda", precision="exact")
    assert max_err([g.cpu() for g in got], expected(q, t, kf, kb)) <= TOL32


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[5], (3, 9, 64, 6, 5, 5, 3)])
def test_half_precision(dtype, shape):
    """Oracle on the rounded inputs (only accumulation error left), and STYLE rule 5 against the fp64 oracle."""
    B, N, C, H, W, kf, kb = shape
    q64, t64 = feats((B, C, H, W), torch.float64, seed=7), feats((N, C, H, W), torch.float64, seed=8)
    q, t = q64.to(dtype), t64.to(dtype)
    got = hf.window_match(q, t, kf, kb, backend="cuda")
    assert max_err(got, oracle(q, t, kf, kb)) <= 2e-5
    exact = oracle(q64, t64, kf, kb)
    ref_err = max_err(reference_window_match(q, t, kf, kb), exact)
    assert max_err(got, exact) <= 2 * ref_err + 1e-6


@gpu
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[5]])
def test_tf32(shape):
    B, N, C, H, W, kf, kb = shape
    q, t = feats((B, C, H, W), seed=9), feats((N, C, H, W), seed=10)
    got = hf.window_match(q, t, kf, kb, backend="cuda", precision="tf32")
    assert max_err(got, oracle(tf32_round(q), tf32_round(t), kf, kb)) <= 2e-5
    assert max_err(got, oracle(q, t, kf, kb)) <= 2.0**-10  # |<q, t>| error of unit vectors with 11-bit inputs
    exact = hf.window_match(q, t, kf, kb, backend="cuda", precision="exact")
    assert max_err(got, exact) > 0  # really a different arithmetic
    for x, y in zip(torch.ops.hetmm.window_match(q, t, kf, kb, "tf32"), got):
        assert torch.equal(x, y)


@gpu
def test_precision_follows_torch_matmul_precision_when_not_given():
    q, t = feats((2, 32, 6, 5), seed=27), feats((3, 32, 6, 5), seed=28)
    want = {p: hf.window_match(q, t, 5, 3, backend="cuda", precision=p) for p in ("exact", "tf32")}
    old = torch.get_float32_matmul_precision()
    try:
        for torch_precision, ours in (("highest", "exact"), ("high", "tf32"), ("medium", "tf32")):
            torch.set_float32_matmul_precision(torch_precision)
            for x, y in zip(hf.window_match(q, t, 5, 3, backend="cuda"), want[ours]):
                assert torch.equal(x, y), torch_precision
    finally:
        torch.set_float32_matmul_precision(old)


@gpu
def test_threads_with_different_precisions_do_not_race():
    """Two threads calling with different precisions at once each get their own arithmetic."""
    q, t = feats((4, 64, 12, 10), seed=29), feats((20, 64, 12, 10), seed=30)
    assert precision_race("cuda", q, t, 7, 3, rounds=20) == []


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_several_image_template_and_channel_chunks(dtype):
    """B > 32 (two image groups), N > 64 (two template chunks), C over several channel chunks, paper windows."""
    q = feats((40, 150, 12, 10), seed=11).to(dtype)
    t = feats((70, 150, 12, 10), seed=12).to(dtype)
    got = hf.window_match(q, t, 13, 7, backend="cuda", precision="exact")
    assert max_err(got, oracle(q, t, 13, 7)) <= (2e-5 if dtype == torch.float16 else 1e-5)


@gpu
def test_paper_layer_shapes_against_reference():
    """The shapes of the paper preset's layers (fp16), against the reference in float64 on the same values."""
    for C, S, kf, kb in ((256, 64, 13, 7), (512, 32, 9, 5), (1024, 16, 7, 3)):
        q = feats((2, C, S, S), seed=C).half()
        t = feats((6, C, S, S), seed=C + 1).half()
        got = hf.window_match(q, t, kf, kb, backend="cuda")
        assert max_err(got, oracle(q, t, kf, kb)) <= 5e-5, (C, S)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_noncontiguous_and_deterministic(dtype):
    q, t = feats((3, 24, 9, 7), seed=13).to(dtype), feats((5, 24, 9, 7), seed=14).to(dtype)
    a = hf.window_match(q, t, 5, 3, backend="cuda")
    b = hf.window_match(noncontiguous(q), noncontiguous(t), 5, 3, backend="cuda")
    c = hf.window_match(q, t, 5, 3, backend="cuda")
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_tile_size_cap_changes_no_bit(dtype):
    """Each column sums its stages in the same order whatever the block's tile: every max_warps gives the same bits."""
    q, t = feats((33, 72, 11, 10), seed=21).to(dtype), feats((70, 72, 11, 10), seed=22).to(dtype)
    want = hf.window_match(q, t, 7, 3, backend="cuda")
    for warps in (1, 2, 4):
        got = engine.window_match_tuned(q, t, 7, 3, max_warps=warps)
        for x, y in zip(got, want):
            assert torch.equal(x, y), warps


@gpu
@pytest.mark.parametrize("dtype, precision", [(torch.float16, "exact"), (torch.bfloat16, "exact"),
                                              (torch.float32, "exact"), (torch.float32, "tf32"),
                                              (torch.float64, "exact")])
def test_split_tiles_change_no_bit(dtype, precision):
    """A tile's work shared among blocks (batch 1 splits automatically) gives the same bits as one block per tile:
    the blocks combine maxima only; forced splits include more blocks than a tile has units (empty blocks)."""
    q, t = feats((1, 72, 9, 11), seed=25).to(dtype), feats((70, 72, 9, 11), seed=26).to(dtype)
    want = engine.window_match_tuned(q, t, 7, 3, precision, splits=1)
    for count in (0, 2, 3, 1024):
        got = engine.window_match_tuned(q, t, 7, 3, precision, splits=count)
        for x, y in zip(got, want):
            assert torch.equal(x, y), count
    qr, tr = (tf32_round(q), tf32_round(t)) if precision == "tf32" else (q, t)
    ref = reference_window_match(qr.double(), tr.double(), 7, 3)
    assert max_err(want, ref) < (5e-3 if dtype in (torch.float16, torch.bfloat16) else 1e-5)


@gpu
@pytest.mark.parametrize("dtype, precision", [(torch.float16, "exact"), (torch.bfloat16, "exact"),
                                              (torch.float32, "exact"), (torch.float32, "tf32"),
                                              (torch.float64, "exact")])
def test_pixel_major_inputs_read_in_place(dtype, precision):
    """Pixel-major inputs (hf.pixel_major) give the same bits as NCHW ones; except on the TF32 path (which rounds a
    copy) the kernel reads them without packing a copy, and no path writes to them."""
    q, t = feats((2, 64, 12, 10), seed=23).to(dtype), feats((40, 64, 12, 10), seed=24).to(dtype)
    qp, tp = hf.pixel_major(q), hf.pixel_major(t)
    t_before = tp.clone()
    want = hf.window_match(q, t, 7, 3, backend="cuda", precision=precision)
    torch.cuda.synchronize()

    def extra_bytes(qx, tx):
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = hf.window_match(qx, tx, 7, 3, backend="cuda", precision=precision)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, out

    nchw, _ = extra_bytes(q, t)
    pm, got = extra_bytes(qp, tp)
    for x, y in zip(got, want):
        assert torch.equal(x, y)
    assert torch.equal(tp, t_before)
    t_bytes = t.numel() * t.element_size()
    if precision == "tf32":
        assert pm >= t_bytes  # packed and rounded copies
    else:
        assert pm <= nchw - t_bytes, (pm, nchw, t_bytes)


@gpu
def test_detector_keeps_cuda_templates_pixel_major():
    det = hf.HETMM(backbone="resnet18", pretrained=False, image_size=64, progress=False, device="cuda")
    g = torch.Generator().manual_seed(2)
    det.fit(torch.rand(4, 3, 64, 64, generator=g))
    for t in det.templates:
        assert hf.pixel_major(t) is t
    det.select(2)
    for t in det.active_templates:
        assert hf.pixel_major(t) is t
    forced = hf.HETMM(backbone="resnet18", pretrained=False, image_size=64, progress=False, device="cuda",
                      backend="torch").fit(torch.rand(2, 3, 64, 64, generator=g))
    assert all(t.is_contiguous() for t in forced.templates)  # only the CUDA kernel gains from the layout


@gpu
def test_values_init_and_ladder():
    q = feats((1, 4, 3, 3), seed=15)
    f, b = hf.window_match(q, q.clone(), 3, 3)
    torch.testing.assert_close(f, torch.ones_like(f))
    torch.testing.assert_close(b, torch.ones_like(b))
    c = torch.zeros(1, 2, 1, 1, device=DEV)
    c[0, 0] = 1.0
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        f, b = hf.window_match(c.to(dtype), -c.to(dtype), 1, 1, backend="cuda")
        assert f.item() == -1.0 and b.item() == -1.0
    assert _backends.select("window_match", None, (q, q))[0] == "cuda"


@gpu
def test_channel_limit_is_refused_not_crashed():
    cmax = engine.window_match_max_channels(torch.float16, "exact", torch.cuda.current_device())
    q = feats((1, cmax + 64, 2, 2), seed=16).half()
    assert any("channels exceed" in w for w in _backends.reasons("window_match", "cuda", (q, q)))
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run"):
        hf.window_match(q, q, 3, 3, backend="cuda")
    with pytest.raises(ValueError, match="channels exceed"):
        torch.ops.hetmm.window_match(q, q, 3, 3)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_naive_baseline(dtype):
    q, t = feats((2, 16, 6, 7), seed=17).to(dtype), feats((3, 16, 6, 7), seed=18).to(dtype)
    got = engine.window_match_naive(q, t, 5, 3)
    assert max_err(got, oracle(q, t, 5, 3)) <= 1e-5


@gpu
def test_opcheck_window_match():
    q, t = feats((2, 8, 5, 4), seed=19), feats((3, 8, 5, 4), seed=20)
    torch.library.opcheck(torch.ops.hetmm.window_match.default, (q, t, 3, 5))
    for precision in ("exact", "tf32"):
        torch.library.opcheck(torch.ops.hetmm.window_match.default, (q, t, 3, 5, precision))
        torch.library.opcheck(torch.ops.hetmm.window_match.default, (q.half(), t.half(), 5, 1, precision))
        torch.library.opcheck(torch.ops.hetmm._window_match_cuda_tuned.default, (q, t, 3, 5, precision, 1, 3))
    torch.library.opcheck(torch.ops.hetmm._window_match_naive.default, (q, t, 3, 5))


# ---------------------------------------------------------------------------------------------------------------------
# optics_labels / pts_select


def optics_problems(count: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(5, 80))
        x = clustered_points(n, int(rng.integers(2, 12)), int(rng.integers(0, 5)), float(rng.uniform(0.02, 0.6)), rng,
                             n_duplicates=int(rng.integers(0, 6)))
        out.append((cosine_distances(x), int(rng.integers(2, max(3, n // 3)))))
    return out


@gpu
def test_optics_labels_equal_cpu_engine():
    import warnings

    from hetmm_fast.reference.optics_labels import optics_labels as sk_optics

    mismatches = 0
    for d, ms in optics_problems(200, seed=21):
        dist = torch.from_numpy(d)[None]
        got = hf.optics_labels(dist.to(DEV), ms, backend="cuda")
        assert got.device.type == "cuda" and got.dtype == torch.int64 and got.shape == dist.shape[:2]
        if cpu_backend_usable():
            mismatches += not torch.equal(got.cpu(), hf.optics_labels(dist, ms, backend="cpu"))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mismatches += not same_partition(got[0].cpu().numpy(), sk_optics(dist, ms)[0].numpy())
    assert mismatches == 0


@gpu
def test_optics_labels_batched_and_validated():
    rng = np.random.default_rng(22)
    ds = np.stack([cosine_distances(clustered_points(300, 8, 4, 0.1, rng)) for _ in range(6)])
    dist = torch.from_numpy(ds).to(DEV)
    batch = hf.optics_labels(dist, 5, backend="cuda")
    for i in range(6):
        assert torch.equal(batch[i], hf.optics_labels(dist[i : i + 1], 5, backend="cuda")[0])
    bad = dist.clone()
    bad[2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"finite and >= 0, got dist\[2, 3, 4\]"):
        torch.ops.hetmm.optics_labels(bad, 5, 0.05)
    torch.library.opcheck(torch.ops.hetmm.optics_labels.default, (dist[:2], 5, 0.05))


def clustered_templates(n, c, h, w, seed, n_dup=3, device=DEV):
    return _clustered_templates(n, c, h, w, seed, n_dup, device)


@gpu
@pytest.mark.parametrize("n, c, h, w, size",
                         [(24, 6, 3, 4, 4), (17, 5, 2, 3, 5), (40, 70, 3, 3, 1), (130, 16, 4, 5, 60)])
def test_pts_select_equals_cpu_engine(n, c, h, w, size):
    t = clustered_templates(n, c, h, w, seed=n)
    sel, idx = hf.pts_select(t, size, backend="cuda", return_indices=True)
    assert sel.device.type == "cuda" and idx.shape == (size, h, w) and idx.dtype == torch.int64
    assert torch.equal(sel, torch.gather(t, 0, idx[:, None].expand(size, c, h, w)))
    for p in range(h * w):
        assert len(set(idx.view(size, -1)[:, p].tolist())) == size
    if cpu_backend_usable():
        assert torch.equal(idx.cpu(), hf.pts_select(t.cpu(), size, backend="cpu", return_indices=True)[1])
    else:
        from test_pts_select import expected_indices  # the plain-Python transcription of SPEC §4

        assert torch.equal(idx.cpu(), expected_indices(t.cpu(), size))


@gpu
def test_pts_select_op_takes_one_template():
    """N = 1 reaches the op only when called directly (the public op returns early for size >= N); min_samples = 2
    exceeds N there, which the OPTICS launcher refuses, so the wrapper answers itself, like the CPU engine."""
    t = clustered_templates(1, 5, 2, 3, seed=3)
    got = torch.ops.hetmm.pts_select(t, 1)
    assert got.device.type == "cuda" and torch.equal(got.cpu(), torch.zeros(1, 2, 3, dtype=torch.int64))
    if cpu_backend_usable():
        assert torch.equal(got.cpu(), torch.ops.hetmm.pts_select(t.cpu(), 1))


@gpu
def test_pts_select_dtypes_noncontiguous_and_opcheck():
    t = clustered_templates(30, 8, 3, 3, seed=5)
    a = hf.pts_select(t, 4, backend="cuda", return_indices=True)[1]
    b = hf.pts_select(noncontiguous(t), 4, backend="cuda", return_indices=True)[1]
    assert torch.equal(a, b)
    d = hf.pts_select(t.double(), 4, backend="cuda", return_indices=True)[1]
    if cpu_backend_usable():
        assert torch.equal(d.cpu(), hf.pts_select(t.double().cpu(), 4, backend="cpu", return_indices=True)[1])
    h = hf.pts_select(t.half(), 4, backend="cuda", return_indices=True)[1]
    assert torch.equal(h, hf.pts_select(t.half().float(), 4, backend="cuda", return_indices=True)[1])
    bad = t.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        torch.ops.hetmm.pts_select(bad, 4)
    torch.library.opcheck(torch.ops.hetmm.pts_select.default, (t, 4))


@gpu
def test_detector_on_cuda_matches_cpu_in_every_backbone_dtype():
    """The whole detector on the GPU (backbone, cuda window_match, post-processing on the device) against the CPU.
    Tolerances about 10x what the 16-bit backbones differ by on the CPU (1e-4, 1e-3); cuDNN may run float32 in TF32."""
    kw = dict(backbone="resnet18", pretrained=False, image_size=64, progress=False, batch_size=4,
              preset=Preset("blur", get_preset().layers,
                                       pixel_post=PostProcess("blur", 2.0, 9)))
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(6, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    want = hf.HETMM(device="cpu", **kw).fit(train).predict(test)
    for backbone_dtype, tol in ((torch.float32, 1e-2), (torch.float16, 1e-2), (torch.bfloat16, 2e-2)):
        det = hf.HETMM(device="cuda", backbone_dtype=backbone_dtype, **kw).fit(train)
        assert det.templates[0].device.type == "cuda"
        got = det.predict(test)
        assert got.maps.device.type == "cpu" and torch.isfinite(got.raw).all()
        torch.testing.assert_close(got.raw, want.raw, atol=tol, rtol=0)
        torch.testing.assert_close(got.maps, want.maps, atol=tol, rtol=0)


@gpu
def test_detector_cuda_graph_equals_eager_and_guards():
    det = hf.HETMM(backbone="resnet18", pretrained=False, image_size=64, progress=False, device="cuda",
                   dtype=torch.float16, backbone_dtype=torch.float16)
    g = torch.Generator().manual_seed(1)
    det.fit(torch.rand(5, 3, 64, 64, generator=g))
    x = torch.rand(3, 3, 64, 64, generator=g)
    graphed = det.cuda_graph(batch_size=3)
    want = det.anomaly_map(x.cuda())
    torch.testing.assert_close(graphed(x), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(graphed(x[:1].cuda()), want[:1], rtol=0, atol=1e-5)  # fewer rows than captured
    with pytest.raises(ValueError, match="this graph takes 1..3"):
        graphed(torch.rand(4, 3, 64, 64))
    with pytest.raises(ValueError, match="expected a Tensor"):
        graphed(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        det.cuda_graph(batch_size=0)
    det.select(2)
    with pytest.raises(RuntimeError, match="templates changed since the capture"):
        graphed(x)
    torch.testing.assert_close(det.cuda_graph(1)(x[:1]), det.anomaly_map(x[:1].cuda()), rtol=0, atol=1e-5)

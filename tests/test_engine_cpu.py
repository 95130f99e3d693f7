"""The compiled CPU engine (hetmm_fast._C + hetmm_fast._engine_cpu): op registration, fake kernels, thread-count
determinism, the window_match kernel's tiling edge cases and its boundary checks. Skipped when the extension is not
built (the torch reference is tested elsewhere)."""
import numpy as np
import pytest
import torch

import hetmm_fast as hf
from hetmm_fast import _backends
from hetmm_fast.reference.window_match import window_match as reference_window_match
from hetmm_fast.testing import (
    brute_window_match,
    clustered_points,
    cosine_distances,
    noncontiguous,
    reduction_tol,
    unit_features,
    within_reference_error,
)

try:
    from hetmm_fast import _engine_cpu
except ModuleNotFoundError:
    pytest.skip("hetmm_fast._C is not built", allow_module_level=True)


def _optics_sample():
    rng = np.random.default_rng(0)
    dist = np.stack([cosine_distances(clustered_points(14, 6, 3, 0.1, rng)) for _ in range(3)])
    return (torch.from_numpy(dist), 3, 0.05)


SAMPLES = {  # op -> list of argument tuples for torch.library.opcheck
    "window_match": [
        (unit_features((2, 8, 5, 7), seed=1), unit_features((3, 8, 5, 7), seed=2), 3, 5),
        (noncontiguous(unit_features((1, 6, 4, 3), seed=3)).half(), unit_features((2, 6, 4, 3), seed=4).half(), 1, 3),
        (unit_features((1, 5, 3, 4), torch.float64, seed=5), unit_features((17, 5, 3, 4), torch.float64, seed=6), 5, 1),
    ],
    "optics_labels": [_optics_sample()],
    "pts_select": [(unit_features((12, 8, 3, 4), seed=7), 4)],
    "pts_labels": [
        (unit_features((12, 8, 3, 4), seed=11), 4),
        (noncontiguous(unit_features((9, 5, 2, 3), seed=12)).half(), 2),
    ],
    "gather_sheets": [
        (unit_features((12, 8, 3, 4), seed=8), torch.randint(0, 12, (5, 3, 4), generator=torch.Generator().manual_seed(9))),
        (noncontiguous(unit_features((6, 3, 2, 5), seed=10)).half(), torch.zeros((2, 2, 5), dtype=torch.int64)),
    ],
}


def test_every_op_has_a_sample():
    assert set(SAMPLES) == {"window_match", "optics_labels", "pts_select", "pts_labels", "gather_sheets"}
    assert "window_match" in _engine_cpu.REGISTERED
    assert set(_engine_cpu.REGISTERED) <= set(SAMPLES)


@pytest.mark.parametrize(
    "op, args",
    [(op, args) for op in _engine_cpu.REGISTERED for args in SAMPLES[op]],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_opcheck(op, args):
    torch.library.opcheck(getattr(torch.ops.hetmm, op).default, args)


@pytest.mark.parametrize("op", _engine_cpu.REGISTERED)
def test_registered_ops_are_selected_on_cpu(op):
    args = SAMPLES[op][0]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    assert _backends.reasons(op, "cpu", tensors) == []


def test_fake_kernels_give_output_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(3, 16, 5, 7)
        t = torch.empty(4, 16, 5, 7)
        f, b = torch.ops.hetmm.window_match(q, t, 3, 3)
        labels = torch.ops.hetmm.optics_labels(torch.empty(6, 9, 9, dtype=torch.float64), 2, 0.05)
        idx = torch.ops.hetmm.pts_select(torch.empty(9, 4, 5, 7), 3)
        clusters = torch.ops.hetmm.pts_labels(torch.empty(9, 4, 5, 7), 3)
        sheets = torch.ops.hetmm.gather_sheets(torch.empty(9, 4, 5, 7, dtype=torch.float16), idx)
    assert sheets.shape == (3, 4, 5, 7) and sheets.dtype == torch.float16
    assert f.shape == b.shape == (3, 5, 7) and f.dtype == b.dtype == torch.float32
    assert labels.shape == (6, 9) and labels.dtype == torch.int64
    assert idx.shape == (3, 5, 7) and idx.dtype == torch.int64
    assert clusters.shape == (9, 5, 7) and clusters.dtype == torch.int64


def test_can_run_reasons():
    q = unit_features((1, 4, 3, 3))
    assert _engine_cpu._window_match_can_run((q, q)) == []
    assert _engine_cpu._window_match_can_run((q.to("meta"), q.to("meta"))) == ["inputs on meta, not cpu"]
    assert _engine_cpu._window_match_can_run((q.int(), q.int())) == ["dtype int32 not supported"]
    why = _backends.reasons("window_match", "cpu", (q.to("meta"), q.to("meta")))
    assert why == ["inputs on meta, not cpu"]


SHAPES = [  # (B, N, C, H, W, kf, kb): each stresses one part of the kernel's tiling
    (1, 1, 1, 1, 1, 13, 7),  # 1x1 map, C = 1, windows larger than the map
    (1, 17, 9, 3, 9, 3, 5),  # a 16-template chunk plus a 1-template tail; W = 9: one 8-wide transpose + a tail
    (2, 33, 16, 9, 8, 13, 7),  # three chunks, B > 1, windows larger than the map
    (3, 5, 24, 11, 17, 7, 3),  # non-square, three images
    (1, 16, 40, 6, 33, 9, 9),  # exactly one chunk, equal windows, wide map
    (2, 8, 3, 7, 2, 1, 5),  # forward window 1, C < 8 (no vector transposes)
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiling_edge_cases_match_brute_force(shape, dtype):
    B, N, C, H, W, kf, kb = shape
    q = unit_features((B, C, H, W), dtype, seed=11)
    t = unit_features((N, C, H, W), dtype, seed=12)
    fwd, bwd = hf.window_match(q, t, kf, kb, backend="cpu")
    ef, eb = brute_window_match(q, t, kf, kb)
    tol = reduction_tol(C, dtype, out=torch.float32)  # testing.py rule 1
    torch.testing.assert_close(fwd.double(), ef, atol=tol, rtol=0)
    torch.testing.assert_close(bwd.double(), eb, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_strided_inputs_give_identical_results(dtype):
    """Channels-last strided inputs go through the scalar pack; the dot products must be the very same."""
    q = unit_features((2, 20, 6, 11), dtype, seed=13)
    t = unit_features((19, 20, 6, 11), dtype, seed=14)
    want = hf.window_match(q, t, 5, 3, backend="cpu")
    got = hf.window_match(noncontiguous(q), noncontiguous(t), 5, 3, backend="cpu")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rule_on_chunked_shape(dtype):
    """STYLE rule 5 on a shape with template chunks, vector transposes and their tails."""
    q64 = unit_features((2, 40, 7, 10), torch.float64, seed=15)
    t64 = unit_features((21, 40, 7, 10), torch.float64, seed=16)
    exact = reference_window_match(q64, t64, 5, 3)
    q, t = q64.to(dtype), t64.to(dtype)
    ref = reference_window_match(q, t, 5, 3)
    got = hf.window_match(q, t, 5, 3, backend="cpu")
    err, allowed = within_reference_error(got, ref, [e.double() for e in exact], slack=reduction_tol(40))
    assert err <= allowed, (err, allowed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_bit_identical_for_one_and_two_threads(dtype):
    q = unit_features((3, 24, 9, 13), dtype, seed=17)
    t = unit_features((35, 24, 9, 13), dtype, seed=18)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hf.window_match(q, t, 7, 5, backend="cpu")
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
        two = hf.window_match(q, t, 7, 5, backend="cpu")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_matches_reference_at_feature_scale():
    """A realistic layer (C = 64, N = 20, 16x16, paper windows 13x7) against the reference backend."""
    q = unit_features((2, 64, 16, 16), seed=19)
    t = unit_features((20, 64, 16, 16), seed=20)
    got = hf.window_match(q, t, 13, 7, backend="cpu")
    want = hf.window_match(q, t, 13, 7, backend="torch")
    torch.testing.assert_close(got, want, atol=2 * reduction_tol(64), rtol=0)  # testing.py rule 2


@pytest.mark.parametrize(
    "args, exc, text",
    [
        ((unit_features((1, 4, 3, 3)), unit_features((2, 4, 3, 3)), 2, 3), ValueError, "positive odd"),
        ((unit_features((1, 4, 3, 3)), unit_features((2, 4, 3, 3)), 3, -1), ValueError, "positive odd"),
        ((unit_features((1, 4, 3, 3)), unit_features((2, 5, 3, 3)), 3, 3), ValueError, "same C, H, W"),
        ((unit_features((1, 4, 3, 3)), unit_features((2, 4, 3)), 3, 3), ValueError, "must be 4-D"),
        ((unit_features((0, 4, 3, 3)), unit_features((2, 4, 3, 3)), 3, 3), ValueError, "empty input"),
        ((unit_features((1, 4, 3, 3)), unit_features((2, 4, 3, 3)).double(), 3, 3), TypeError, "dtype"),
        ((unit_features((1, 4, 3, 3)).int(), unit_features((2, 4, 3, 3)).int(), 3, 3), TypeError, "Int"),
        ((unit_features((1, 4, 3, 3)), unit_features((2, 4, 3, 3)), 3, 3, "fp8"), ValueError,
         r"hetmm.window_match \(cpu\): precision must be 'exact' or 'tf32', got 'fp8'"),
    ],
)
def test_op_boundary_checks(args, exc, text):
    """Direct torch.ops calls bypass hetmm_fast's validation; the C++ wrapper must still refuse bad input."""
    with pytest.raises(exc, match=text):
        torch.ops.hetmm.window_match(*args)


GATHER_SHAPES = [  # (N, C, H, W, K)
    (1, 1, 1, 1, 1),
    (7, 3, 5, 9, 4),
    (200, 16, 8, 8, 60),
    (5, 33, 1, 17, 5),
]


@pytest.mark.parametrize("shape", GATHER_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_gather_sheets_copies_exactly(shape, dtype, strided):
    N, C, H, W, K = shape
    gen = torch.Generator().manual_seed(N * C + H)
    if strided:  # channel-major storage, every other column: sN < sC, sW = 2
        t = torch.randn(C, N, H, 2 * W, generator=gen).to(dtype).transpose(0, 1)[..., ::2]
    else:
        t = torch.randn(N, C, H, W, generator=gen).to(dtype)
    idx = torch.randint(0, N, (K, H, W), generator=torch.Generator().manual_seed(K))
    got = torch.ops.hetmm.gather_sheets(t, idx)
    want = torch.stack([t[idx[k], :, torch.arange(H)[:, None], torch.arange(W)[None, :]].permute(2, 0, 1)
                        for k in range(K)])
    assert got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got, want)


def test_gather_sheets_channels_last_input_and_one_thread():
    t = unit_features((9, 6, 5, 7), seed=21).to(memory_format=torch.channels_last)
    idx = torch.randint(0, 9, (4, 5, 7), generator=torch.Generator().manual_seed(22))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.hetmm.gather_sheets(t, idx)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, torch.gather(t, 0, idx.unsqueeze(1).expand(4, 6, 5, 7)))
    assert torch.equal(one, torch.ops.hetmm.gather_sheets(t, idx))


@pytest.mark.parametrize(
    "idx, exc, text",
    [
        (torch.full((2, 3, 4), 5, dtype=torch.int64), IndexError, r"\[0, N=5\)"),
        (torch.full((2, 3, 4), -1, dtype=torch.int64), IndexError, "got \\[-1, -1\\]"),
        (torch.zeros((2, 3, 4), dtype=torch.int32), TypeError, "int64"),
        (torch.zeros((2, 4, 3), dtype=torch.int64), ValueError, r"\[K, H, W\]"),
    ],
)
def test_gather_sheets_boundary_checks(idx, exc, text):
    with pytest.raises(exc, match=text):
        torch.ops.hetmm.gather_sheets(unit_features((5, 2, 3, 4)), idx)


def test_public_pts_select_uses_the_compiled_gather(monkeypatch):
    """hf.pts_select on the cpu backend gathers with hetmm.gather_sheets, and the sheets equal the indexed input."""
    t = unit_features((30, 8, 4, 5), seed=23)
    calls = []
    impl = _backends._IMPLS["gather_sheets"]["cpu"]
    monkeypatch.setitem(
        _backends._IMPLS["gather_sheets"], "cpu",
        _backends.Impl(lambda a, b: calls.append(1) or impl.fn(a, b), impl.can_run),
    )
    out, idx = hf.pts_select(t, 6, backend="cpu", return_indices=True)
    assert calls == [1]
    assert torch.equal(out, torch.gather(t, 0, idx.unsqueeze(1).expand(6, 8, 4, 5)))
    ref_out = hf.pts_select(t, 6, backend="torch")
    assert torch.equal(out, ref_out)

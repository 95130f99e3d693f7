import pytest
import torch

import hetmm_fast as hf
from hetmm_fast import _backends
from hetmm_fast.reference.window_match import window_match as reference_window_match
from hetmm_fast.testing import (
    brute_window_match,
    noncontiguous,
    precision_race,
    reduction_tol,
    unit_features,
    within_reference_error,
)

BACKENDS = [b for b, why in hf.available_backends().items() if not why and b != "cuda"]


def tol(C: int, dtype: torch.dtype) -> float:
    """testing.py rule 1: a length-C dot product of unit vectors accumulated in the input dtype, stored as float32."""
    return reduction_tol(C, dtype, out=torch.float32)


SHAPES = [  # (B, N, C, H, W, kf, kb)
    (1, 1, 4, 1, 1, 1, 1),  # 1x1 map, window 1, N=1
    (2, 3, 8, 5, 7, 3, 5),  # non-square, B>1, bwd window larger than fwd
    (1, 4, 16, 4, 9, 13, 7),  # windows larger than the map
    (3, 2, 5, 6, 3, 1, 3),  # odd channel count, forward window 1
    (2, 5, 3, 9, 8, 7, 1),  # backward window 1
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_brute_force(backend, shape, dtype):
    B, N, C, H, W, kf, kb = shape
    q = unit_features((B, C, H, W), dtype, seed=1)
    t = unit_features((N, C, H, W), dtype, seed=2)
    fwd, bwd = hf.window_match(q, t, kf, kb, backend=backend)
    ef, eb = brute_window_match(q, t, kf, kb)
    assert fwd.dtype == bwd.dtype == torch.float32
    assert fwd.shape == bwd.shape == (B, H, W)
    torch.testing.assert_close(fwd.double(), ef, atol=tol(C, dtype), rtol=0)
    torch.testing.assert_close(bwd.double(), eb, atol=tol(C, dtype), rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_inputs(backend):
    q = unit_features((2, 6, 5, 4), seed=3)
    t = unit_features((3, 6, 5, 4), seed=4)
    want = hf.window_match(q, t, 3, 5, backend=backend)
    got = hf.window_match(noncontiguous(q), noncontiguous(t), 3, 5, backend=backend)
    torch.testing.assert_close(got, want, atol=2 * tol(6, torch.float32), rtol=0)  # rule 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_reference(backend, dtype):
    """STYLE rule 5: error <= 2 x the error of the same-dtype reference, both against an fp64 oracle."""
    q64 = unit_features((2, 32, 6, 5), torch.float64, seed=5)
    t64 = unit_features((4, 32, 6, 5), torch.float64, seed=6)
    exact = brute_window_match(q64, t64, 5, 3)
    q, t = q64.to(dtype), t64.to(dtype)
    ref = reference_window_match(q, t, 5, 3)
    got = hf.window_match(q, t, 5, 3, backend=backend)
    err, allowed = within_reference_error(got, ref, exact, slack=tol(32, torch.float32))
    assert err <= allowed, (err, allowed)


def test_reference_chunking_is_exact():
    """A tiny memory budget forces template chunks and row blocks; the result must not change."""
    q = unit_features((3, 8, 7, 6), seed=7)
    t = unit_features((9, 8, 7, 6), seed=8)
    want = reference_window_match(q, t, 5, 3)
    got = reference_window_match(q, t, 5, 3, budget_bytes=1)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    ef, eb = brute_window_match(q, t, 5, 3)
    torch.testing.assert_close(got[0].double(), ef, atol=tol(8, torch.float32), rtol=0)


def test_values_and_init():
    """Identical query and template: both maps are 1. Anti-correlated: the -1 floor of the running max."""
    q = unit_features((1, 4, 3, 3), seed=9)
    f, b = hf.window_match(q, q.clone(), 3, 3)
    torch.testing.assert_close(f, torch.ones_like(f), atol=tol(4, torch.float32), rtol=0)
    torch.testing.assert_close(b, torch.ones_like(b), atol=tol(4, torch.float32), rtol=0)
    c = torch.zeros(1, 2, 1, 1)
    c[0, 0] = 1.0
    f, b = hf.window_match(c, -c, 1, 1)
    assert f.item() == -1.0 and b.item() == -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    q = unit_features((2, 16, 8, 8), seed=10)
    t = unit_features((5, 16, 8, 8), seed=11)
    a = hf.window_match(q, t, 7, 3, backend=backend)
    b = hf.window_match(q, t, 7, 3, backend=backend)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


Q = unit_features((1, 4, 5, 5))
T = unit_features((2, 4, 5, 5))


@pytest.mark.parametrize(
    "args, exc, text",
    [
        ((Q, T, 4, 3), ValueError, "fwd_window must be a positive odd int"),
        ((Q, T, 3, 0), ValueError, "bwd_window must be a positive odd int"),
        ((Q, T, -3, 3), ValueError, "fwd_window must be a positive odd int"),
        ((Q, T, 3.0, 3), TypeError, "fwd_window must be an int"),
        ((Q, T, True, 3), TypeError, "fwd_window must be an int"),
        ((Q, unit_features((2, 5, 5, 5)), 3, 3), ValueError, "same C, H, W"),
        ((Q, unit_features((2, 4, 5, 6)), 3, 3), ValueError, "same C, H, W"),
        ((Q, unit_features((2, 4, 6, 5)), 3, 3), ValueError, "same C, H, W"),
        ((Q[0], T, 3, 3), ValueError, "query must be 4-D"),
        ((Q, T[None], 3, 3), ValueError, "templates must be 4-D"),
        ((Q[:0], T, 3, 3), ValueError, "query is empty"),
        ((Q, T[:0], 3, 3), ValueError, "templates is empty"),
        ((Q, T.double(), 3, 3), TypeError, "dtype"),
        ((Q.int(), T.int(), 3, 3), TypeError, "query dtype must be one of"),
        ((Q.numpy(), T, 3, 3), TypeError, "query must be a torch.Tensor"),
        ((Q, T.to("meta"), 3, 3), ValueError, "query is on cpu but templates on meta"),
    ],
)
def test_errors(args, exc, text):
    with pytest.raises(exc, match=text):
        hf.window_match(*args)


def test_backend_forcing(monkeypatch):
    with pytest.raises(RuntimeError, match="unknown backend 'bogus'"):
        hf.window_match(Q, T, 3, 3, backend="bogus")
    for name, why in hf.available_backends().items():
        if why:
            with pytest.raises(RuntimeError, match=f"backend '{name}' cannot run"):
                hf.window_match(Q, T, 3, 3, backend=name)
    monkeypatch.setenv("HETMM_BACKEND", "bogus")
    with pytest.raises(RuntimeError, match="unknown backend 'bogus'"):
        hf.window_match(Q, T, 3, 3)
    monkeypatch.setenv("HETMM_BACKEND", "torch")
    assert _backends.select("window_match", None, (Q, T))[0] == "torch"


def test_available_backends_shape():
    av = hf.available_backends()
    assert list(av) == ["cuda", "triton", "cpu", "torch"]
    assert av["torch"] == []
    assert all(isinstance(v, list) and all(isinstance(s, str) and s for s in v) for v in av.values())
    if not torch.cuda.is_available():
        assert "no CUDA device" in av["cuda"]


# ---------------------------------------------------------------------------------------------------------------------
# pixel_major: the CUDA kernel's input layout, accepted by every backend.


def test_pixel_major_layout_values_and_identity():
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    p = hf.pixel_major(x)
    assert p.shape == x.shape and torch.equal(p, x)
    assert p.permute(2, 3, 0, 1).is_contiguous() and not p.is_contiguous()
    assert hf.pixel_major(p) is p  # already pixel-major: no copy
    with pytest.raises(ValueError, match="4-D"):
        hf.pixel_major(x[0])


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_pixel_major_inputs_give_the_same_results(backend):
    if backend == "cpu" and hf.available_backends()["cpu"]:
        pytest.skip("CPU engine not built")
    q, t = unit_features((2, 20, 7, 9), seed=31), unit_features((6, 20, 7, 9), seed=32)
    want = hf.window_match(q, t, 5, 3, backend=backend)
    got = hf.window_match(hf.pixel_major(q), hf.pixel_major(t), 5, 3, backend=backend)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=2 * tol(20, torch.float32) if backend == "torch" else 0)


# ---------------------------------------------------------------------------------------------------------------------
# precision: an argument of the op (STYLE.md rule 12), never process-wide state.

cpu_built = pytest.mark.skipif(bool(hf.available_backends()["cpu"]), reason="CPU engine not built")


@cpu_built
def test_schema_carries_precision():
    schema = str(torch.ops.hetmm.window_match.default._schema)
    assert 'str precision="exact"' in schema, schema
    assert schema.startswith("hetmm::window_match(Tensor query, Tensor templates, int fwd_window, int bwd_window")


@cpu_built
@pytest.mark.parametrize("precision", ["exact", "tf32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_opcheck_each_precision_on_cpu(precision, dtype):
    q, t = unit_features((2, 8, 5, 4), dtype, seed=41), unit_features((3, 8, 5, 4), dtype, seed=42)
    torch.library.opcheck(torch.ops.hetmm.window_match.default, (q, t, 3, 5, precision))


@cpu_built
def test_cpu_engine_is_exact_for_either_precision():
    q, t = unit_features((2, 24, 6, 7), seed=43), unit_features((4, 24, 6, 7), seed=44)
    exact = torch.ops.hetmm.window_match(q, t, 5, 3)  # the schema's default
    for got in (torch.ops.hetmm.window_match(q, t, 5, 3, "exact"), torch.ops.hetmm.window_match(q, t, 5, 3, "tf32"),
                hf.window_match(q, t, 5, 3, backend="cpu", precision="tf32")):
        assert all(torch.equal(x, y) for x, y in zip(got, exact))


@cpu_built
def test_cpu_op_refuses_unknown_precision():
    message = r"hetmm.window_match \(cpu\): precision must be 'exact' or 'tf32', got 'ieee'"
    with pytest.raises(ValueError, match=message):
        torch.ops.hetmm.window_match(Q, T, 3, 3, "ieee")


@pytest.mark.parametrize("bad", ["ieee", "TF32", "highest", 32])
def test_public_wrapper_refuses_unknown_precision(bad):
    with pytest.raises(ValueError, match="hetmm.window_match: precision must be one of"):
        hf.window_match(Q, T, 3, 3, precision=bad)


@pytest.mark.parametrize("torch_precision, ours", [("highest", "exact"), ("high", "tf32"), ("medium", "tf32")])
def test_none_follows_torch_matmul_precision(torch_precision, ours, monkeypatch):
    import importlib

    wm_module = importlib.import_module("hetmm_fast.ops.window_match")  # the module, not the function it exports

    seen = []
    monkeypatch.setattr(_backends, "select", lambda op, backend, tensors: (
        "spy", lambda q, t, kf, kb, precision: seen.append(precision) or (q, t)))
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(torch_precision)
        assert wm_module.default_precision() == ours
        hf.window_match(Q, T, 3, 3)
        hf.window_match(Q, T, 3, 3, precision="exact")  # an explicit value wins
    finally:
        torch.set_float32_matmul_precision(old)
    assert seen == [ours, "exact"]


@cpu_built
def test_fake_kernel_takes_precision():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, t = torch.empty(2, 8, 5, 4), torch.empty(3, 8, 5, 4)
        for args in ((q, t, 3, 5), (q, t, 3, 5, "exact"), (q, t, 3, 5, "tf32")):
            f, b = torch.ops.hetmm.window_match(*args)
            assert f.shape == b.shape == (2, 5, 4) and f.dtype == b.dtype == torch.float32


@cpu_built
def test_compile_sees_precision():
    q, t = unit_features((1, 8, 5, 4), seed=45), unit_features((2, 8, 5, 4), seed=46)

    def f(q, t):
        return torch.ops.hetmm.window_match(q, t, 3, 3, "tf32")

    graph = torch.fx.experimental.proxy_tensor.make_fx(f, tracing_mode="fake")(q, t)
    calls = [n for n in graph.graph.nodes if n.op == "call_function" and "window_match" in str(n.target)]
    assert len(calls) == 1 and calls[0].args[4] == "tf32", [n.args for n in calls]


@cpu_built
def test_threads_with_different_precisions_get_their_own_results():
    """No process-wide precision: two threads calling with different values at once each get what their own call
    asks for (on a CPU both compute exactly, so each equals the single-threaded result), and the ops that once set a
    process-wide value do not exist."""
    for op in ("_cuda_set_fp32_precision", "_cuda_fp32_precision", "_cuda_set_window_match_max_warps",
               "_cuda_set_window_match_splits"):
        assert not hasattr(torch.ops.hetmm, op), op
    q, t = unit_features((2, 16, 9, 8), seed=47), unit_features((5, 16, 9, 8), seed=48)
    exact = hf.window_match(q, t, 5, 3, backend="cpu", precision="exact")
    assert all(torch.equal(a, b) for a, b in zip(hf.window_match(q, t, 5, 3, backend="cpu", precision="tf32"), exact))
    assert precision_race("cpu", q, t, 5, 3) == []


def test_cuda_engine_source_has_no_setters():
    """The CUDA engine module (imported only in CUDA builds) defines no setting functions and reads no environment."""
    from pathlib import Path

    source = (Path(hf.__file__).parent / "_engine_cuda.py").read_text()
    for name in ("def set_precision", "def get_precision", "def precision(", "def max_warps(", "def splits(",
                 "_cuda_set_", "os.environ", "HETMM_CUDA_PRECISION"):
        assert name not in source, name

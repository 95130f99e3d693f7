"""Per-pixel Gram and cosine-distance matrices of PTS (SPEC §4) as a Triton kernel, and the Triton PTS backend.

Kernel. For a range of pixels p of ``T[N, C, H, W]`` (any strides), with ``X_p = T[:, :, p]`` (N vectors of C):
``G[p] = X_p X_p^T`` and ``D[p] = max(0, 1 - G[p])``, written pixel-major as ``Tensor[P', N, N]``. Program
``(p, bi, bj)`` computes the ``BI x BJ`` block ``(bi, bj)`` of pixel p, reducing C in chunks of ``BC``. float64
(the PTS default, as in the reference): inputs are up-cast in registers and each entry is the sequential fp64 sum
``sum_c x_i[c] x_j[c]`` (one rank-1 update per channel on CUDA cores: G comes out exactly symmetric and duplicate
vectors give bit-identical rows), or with ``fp64_dot=True`` an fp64 ``tl.dot`` (blocked order). float32: ``tl.dot``
with fp32 accumulation (fp16/bf16 operands as they are; "ieee" exact fp32 products unless ``precision="tf32"``).
Bytes: each program reads ``(BI + BJ) * C`` input elements (pixel-adjacent programs share cache lines) and writes
``BI * BJ`` entries per output; FLOPs ``2 * P * N^2 * C`` in all.

Backend. :func:`pts_select` (registered as ``pts_select``/``"triton"``) computes G and D with the kernel a chunk of
pixels at a time (about ``budget_bytes`` of matrices), clusters D with the best available OPTICS engine (``cuda`` on
the device if registered, else ``cpu``, else the scikit-learn reference, on host copies) and picks the prototypes
per pixel with the reference :func:`hetmm_fast.reference.pts_select.select_from_labels` on G. That reuses the
tested selection code as is (SPEC §4 steps 2-4 have data-dependent control flow per pixel that gains nothing from a
GPU at N of a few hundred); the result equals the reference up to the summation order of G, which only matters for
ties closer than fp64 rounding (exact duplicates stay exact ties, see above).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _backends
from .._validate import check_feature_tensor
from ..reference.pts_select import min_samples_for, select_from_labels
from .window_match import INTERPRET, PRECISIONS, can_run, device_guard  # can_run: same devices and dtypes

DEFAULT_BUDGET_BYTES = 64 << 20
XI = 0.05  # SPEC §4


@triton.jit(do_not_specialize=["p_start"])  # one compile for every chunk of pixels
def _gram_kernel(
    x_ptr, g_ptr, d_ptr,
    N, C, W, p_start,
    s_n, s_c, s_h, s_w,
    WRITE_G: tl.constexpr, WRITE_D: tl.constexpr, FP64: tl.constexpr, USE_DOT: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr,
):
    pl = tl.program_id(0)
    p = p_start + pl
    base = x_ptr + (p // W).to(tl.int64) * s_h + (p % W).to(tl.int64) * s_w
    i = tl.program_id(1) * BI + tl.arange(0, BI)
    j = tl.program_id(2) * BJ + tl.arange(0, BJ)
    i_ok = i < N
    j_ok = j < N
    if USE_DOT:
        cc = tl.arange(0, BC)
        a_ptr = base + i[:, None].to(tl.int64) * s_n + cc[None, :].to(tl.int64) * s_c  # [BI, BC]
        b_ptr = base + j[None, :].to(tl.int64) * s_n + cc[:, None].to(tl.int64) * s_c  # [BC, BJ]
        acc = tl.full([BI, BJ], 0.0, tl.float64 if FP64 else tl.float32)
        for c0 in range(0, C, BC):
            c_ok = cc < C - c0
            a = tl.load(a_ptr, mask=i_ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(b_ptr, mask=c_ok[:, None] & j_ok[None, :], other=0.0)
            if FP64:
                if a.dtype != tl.float64:  # widen through fp32 (exact): the interpreter cannot widen bf16 directly
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a.to(tl.float64), b.to(tl.float64), acc, input_precision="ieee", out_dtype=tl.float64)
            elif UPCAST or a.dtype == tl.float64:
                acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PRECISION)
            else:
                acc = tl.dot(a, b, acc, input_precision=PRECISION)
            a_ptr += BC * s_c
            b_ptr += BC * s_c
    else:  # fp64, one rank-1 update per channel: sequential sums, exactly symmetric
        a_ptr = base + i.to(tl.int64) * s_n
        b_ptr = base + j.to(tl.int64) * s_n
        acc = tl.full([BI, BJ], 0.0, tl.float64)
        for c in range(C):
            a = tl.load(a_ptr, mask=i_ok, other=0.0)
            b = tl.load(b_ptr, mask=j_ok, other=0.0)
            if a.dtype != tl.float64:  # widen through fp32 (exact): the interpreter cannot widen bf16 directly
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc += a.to(tl.float64)[:, None] * b.to(tl.float64)[None, :]
            a_ptr += s_c
            b_ptr += s_c
    out = (pl.to(tl.int64) * N + i[:, None]) * N + j[None, :]
    ok = i_ok[:, None] & j_ok[None, :]
    if WRITE_G:
        tl.store(g_ptr + out, acc, mask=ok)
    if WRITE_D:
        tl.store(d_ptr + out, tl.maximum(1.0 - acc, 0.0), mask=ok)


def _gram_kernel_args(templates, dtype, start, want_g, want_d, fp64_dot, precision, g=None, d=None):
    """Positional arguments and constexprs of one ``_gram_kernel`` launch (outputs ``g``/``d`` as allocated, or
    placeholders of ``dtype`` for ahead-of-time compilation)."""
    N, C, H, W = templates.shape
    if g is None and d is None:
        g = d = torch.empty((0,), dtype=dtype, device="meta")
    blk = 16 if N <= 16 else 32
    out_g = g if g is not None else d  # the kernel skips the store of an output it was not asked for
    out_d = d if d is not None else g
    args = (templates, out_g, out_d, N, C, W, start, *templates.stride())
    meta = dict(
        WRITE_G=want_g, WRITE_D=want_d, FP64=dtype == torch.float64, USE_DOT=dtype != torch.float64 or fp64_dot,
        UPCAST=INTERPRET and templates.dtype == torch.bfloat16,  # see window_match._kernel_args
        PRECISION=precision if templates.dtype in (torch.float32, torch.float64) else "tf32",
        BI=blk, BJ=blk, BC=16 if INTERPRET else 32,
    )
    return args, meta


def _launch(templates, dtype, start, stop, want_g, want_d, fp64_dot, precision, fn="pixel_gram"):
    op = f"{fn}[triton]"
    check_feature_tensor(op, "templates", templates)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"hetmm.{op}: dtype must be torch.float32 or torch.float64, got {dtype}")
    if precision not in PRECISIONS:
        raise ValueError(f"hetmm.{op}: precision must be one of {PRECISIONS}, got {precision!r}")
    N, C, H, W = templates.shape
    P = H * W
    stop = P if stop is None else stop
    for name, v in (("start", start), ("stop", stop)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"hetmm.{op}: {name} must be an int, got {type(v).__name__}")
    if not 0 <= start < stop <= P:
        raise ValueError(f"hetmm.{op}: need 0 <= start < stop <= H*W = {P}, got start={start}, stop={stop}")
    why = can_run((templates,))
    if why:
        raise RuntimeError(f"hetmm.{op}: cannot run: {'; '.join(why)}")
    shape = (stop - start, N, N)
    g = torch.empty(shape, dtype=dtype, device=templates.device) if want_g else None
    d = torch.empty(shape, dtype=dtype, device=templates.device) if want_d else None
    args, meta = _gram_kernel_args(templates, dtype, start, want_g, want_d, fp64_dot, precision, g, d)
    blk = meta["BI"]
    with device_guard(templates):
        _gram_kernel[(stop - start, triton.cdiv(N, blk), triton.cdiv(N, blk))](*args, **meta)
    return g, d


def pixel_gram(templates: torch.Tensor, dtype: torch.dtype = torch.float64, *, start: int = 0,
               stop: int | None = None, fp64_dot: bool = False, precision: str = "ieee") -> torch.Tensor:
    """Per-pixel Gram matrices ``G[p - start, i, j] = <T[i, :, p], T[j, :, p]>`` for pixels ``start <= p < stop``
    (row-major ``p = y * W + x``) of ``templates`` Tensor[N, C, H, W] -> Tensor[stop - start, N, N] of ``dtype``
    (float64: exact sequential fp64 sums, or an fp64 ``tl.dot`` with ``fp64_dot``; float32: ``tl.dot`` with
    ``precision`` for fp32 operands)."""
    return _launch(templates, dtype, start, stop, True, False, fp64_dot, precision)[0]


def pixel_distances(templates: torch.Tensor, dtype: torch.dtype = torch.float64, *, start: int = 0,
                    stop: int | None = None, fp64_dot: bool = False, precision: str = "ieee") -> torch.Tensor:
    """PTS distances ``D = max(0, 1 - G)`` (SPEC §4), arguments and result as :func:`pixel_gram`."""
    return _launch(templates, dtype, start, stop, False, True, fp64_dot, precision, "pixel_distances")[1]


def gram_and_distances(templates: torch.Tensor, dtype: torch.dtype = torch.float64, *, start: int = 0,
                       stop: int | None = None, fp64_dot: bool = False,
                       precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, D)`` from one kernel launch; see :func:`pixel_gram`."""
    return _launch(templates, dtype, start, stop, True, True, fp64_dot, precision, "gram_and_distances")


def _optics_labels(d: torch.Tensor, min_samples: int) -> torch.Tensor:
    """OPTICS labels of ``d`` Tensor[P, N, N] float64 with the best engine that takes it (see module docstring)."""
    if d.is_cuda and not _backends.reasons("optics_labels", "cuda", (d,)):
        return _backends.select("optics_labels", "cuda", (d,))[1](d, min_samples, XI)
    d = d.cpu()
    name = "cpu" if not _backends.reasons("optics_labels", "cpu", (d,)) else "torch"
    return _backends.select("optics_labels", name, (d,))[1](d, min_samples, XI)


def pts_select(templates: torch.Tensor, size: int, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> torch.Tensor:
    """PTS indices (SPEC §4): ``templates`` Tensor[N, C, H, W] (validated, ``size < N``) -> Tensor[size, H, W]
    int64 on the templates' device; ``sel[k, y, x]`` is the k-th choice at pixel (y, x)."""
    N, C, H, W = templates.shape
    P = H * W
    ms = min_samples_for(N, size)
    out = torch.empty((size, P), dtype=torch.int64)
    chunk = max(1, min(P, budget_bytes // (2 * N * N * 8)))
    for p0 in range(0, P, chunk):
        p1 = min(P, p0 + chunk)
        g, d = gram_and_distances(templates, torch.float64, start=p0, stop=p1)
        labels = _optics_labels(d, ms).cpu()
        g = g.cpu()
        for k in range(p1 - p0):
            out[:, p0 + k] = select_from_labels(g[k], labels[k], size)
    return out.view(size, H, W).to(templates.device)

"""Fused mutual window matching (SPEC §2) as one Triton kernel.

Work decomposition. Program ``pid`` (1-D grid, x-blocks fastest, then rows, then image groups) owns a tile of
query pixels: ``BX`` consecutive pixels of row ``y`` for ``NB`` query images, ``M = NB * BX`` rows of the
dot-product tile. The template columns any of them can pair with are ``x0 - dx .. x0 + BX - 1 + dx``
(``dx = min(d, W - 1)``, ``d`` the larger half window), processed ``BT = min(256, next_pow2(BX + 2 dx))`` at a time
(one tile except for very wide windows). For each window row ``y' = y + dy`` (``|dy| <= d``, clipped to the image)
and each template ``t`` the program loads the haloed segment ``T[t, :, y', cols]`` and forms the ``[M, BT]`` tile of
dot products with ``tl.dot`` (C in chunks of ``BC``; the query tile is loaded once when ``C <= BC``). Then

* ``m`` = elementwise max over the templates of those tiles (the ``M_s`` of SPEC §2 for this row);
* backward: mask ``m`` to the backward window and the image, take the column max per image (``[NB, BT]``) and fold
  it into ``bwd[b, y', x]`` with one relaxed float ``atomic_max`` per element and window row (``bwd`` starts at -1);
* forward: ``m`` of the rows inside the forward window is folded (elementwise max) into a ``[M, BT]`` register tile,
  masked and row-reduced once per column tile into the per-pixel running max, stored once at the end.

Nothing of size ``B * N * H * W`` is materialised: ``fwd`` and ``bwd`` (``B * H * W`` fp32 each) are the only global
writes. Work: ``2 * M * BT * C`` FLOPs per (program, window row, template), i.e. about ``BT / (2 d + 1)`` times the
useful ``2 * B * N * H * W * k^2 * C`` (a tile is a rectangle, the window a band). Bytes: per program the query tile
and ``(2 d + 1) * N`` template segments of ``C * BT`` elements; programs of neighbouring x-blocks and rows read the
same segments, which L2 serves. Autotuned over (BX, NB, BC, warps, stages), keyed on B, C, H, W, the windows, dtype
and precision (``HETMM_TRITON_CONFIGS`` narrows the search, see :func:`tuned_configs`); the interpreter runs one
small config.

Numerics: fp16/bf16 inputs are multiplied on tensor cores with fp32 accumulation; fp32 inputs use exact fp32 dot
products (``input_precision="ieee"``) unless TF32 is asked for (``precision="tf32"``, or
``torch.set_float32_matmul_precision("high"/"medium")`` when ``precision`` is left to ``None``); fp64 inputs are
accumulated in fp64 one channel at a time (CUDA-core FMAs, no ``tl.dot``) and rounded to fp32 at the end, like the
reference. A maximum has no ties to break, and ``atomic_max`` is order independent, so results are deterministic.
The summation order over C differs from the reference's ``bmm``: fp32 results agree to a few ulp.
"""
from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._validate import check_window_match

INTERPRET = bool(triton.knobs.runtime.interpret)  # read once: kernels below are built for this mode
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PRECISIONS = ("ieee", "tf32", "tf32x3")
MAX_BT = 256  # template columns per dot tile; wider windows loop over several tiles

# Tile shapes tried by the autotuner on a GPU. BX: query pixels of a row segment, NB: query images per program,
# BC: channel chunk of one tl.dot. BT follows from BX and the window (heuristic below).
GPU_CONFIGS = (
    dict(BX=16, NB=1, BC=32, num_warps=4, num_stages=3),
    dict(BX=16, NB=2, BC=32, num_warps=4, num_stages=3),
    dict(BX=16, NB=4, BC=64, num_warps=4, num_stages=3),
    dict(BX=16, NB=4, BC=32, num_warps=8, num_stages=3),
    dict(BX=32, NB=1, BC=32, num_warps=4, num_stages=3),
    dict(BX=32, NB=2, BC=64, num_warps=8, num_stages=3),
    dict(BX=64, NB=1, BC=64, num_warps=8, num_stages=3),
    dict(BX=16, NB=2, BC=256, num_warps=8, num_stages=2),
)
# The interpreter cannot time configs: it runs one (the smallest tile, fastest on the CPU).
INTERPRETER_CONFIG = dict(BX=16, NB=1, BC=16, num_warps=4, num_stages=1)


def tuned_configs() -> tuple[dict, ...]:
    """The GPU_CONFIGS the autotuner tries: all of them, or those whose indices ``HETMM_TRITON_CONFIGS`` lists
    (comma-separated, e.g. ``"0,5"``; read when hetmm_fast.triton is imported). Fewer configs mean fewer compiles
    and timings for each new shape (each config is compiled the first time: median 0.7 s per variant on the CPU of
    benchmarks/results/triton_aot_*.json), at the price of the tiles left out; one index fixes the tile."""
    spec = os.environ.get("HETMM_TRITON_CONFIGS", "").strip()
    if not spec:
        return GPU_CONFIGS
    try:
        idx = [int(part) for part in spec.split(",")]
    except ValueError:
        idx = []
    if not idx or any(not 0 <= i < len(GPU_CONFIGS) for i in idx):
        raise ValueError(f"HETMM_TRITON_CONFIGS must be comma-separated indices of "
                         f"hetmm_fast.triton.window_match.GPU_CONFIGS (0..{len(GPU_CONFIGS) - 1}), got {spec!r}")
    return tuple(GPU_CONFIGS[i] for i in dict.fromkeys(idx))


def _configs(interpret: bool = INTERPRET) -> list[triton.Config]:
    chosen = (INTERPRETER_CONFIG,) if interpret else tuned_configs()
    out = []
    for c in chosen:
        c = dict(c)
        warps, stages = c.pop("num_warps"), c.pop("num_stages")
        out.append(triton.Config(c, num_warps=warps, num_stages=stages))
    return out


# B, N, H only bound loops and index programs: not specialising on them (==1, %16) saves recompiles per batch size.
@triton.jit(do_not_specialize=["B", "N", "H"])
def _window_match_kernel(
    q_ptr, t_ptr, fwd_ptr, bwd_ptr,
    B, N, C, H, W,
    sq_b, sq_c, sq_h, sq_w,
    st_n, st_c, st_h, st_w,
    DF: tl.constexpr, DB: tl.constexpr, DX: tl.constexpr, DY: tl.constexpr,
    PRECISION: tl.constexpr, FP64: tl.constexpr, UPCAST: tl.constexpr,
    BX: tl.constexpr, NB: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, ONE_C: tl.constexpr,
):
    # Only builtins inside the loops (tl.max/tl.zeros/tl.cdiv are @jit helpers, costly under the interpreter).
    M: tl.constexpr = NB * BX
    SPAN: tl.constexpr = BX + 2 * DX  # template columns any query pixel of the tile can pair with
    pid = tl.program_id(0)
    n_xblk = (W + BX - 1) // BX
    x0 = (pid % n_xblk) * BX
    y = (pid // n_xblk) % H
    b0 = (pid // n_xblk) // H * NB

    r = tl.arange(0, M)
    qi = r % BX
    qb = b0 + r // BX
    qx = x0 + qi
    q_ok = (qb < B) & (qx < W)
    nb = b0 + tl.arange(0, NB)
    q_off = qb.to(tl.int64) * sq_b + y.to(tl.int64) * sq_h + qx.to(tl.int64) * sq_w  # [M]
    cc = tl.arange(0, BC)
    q_tile_ptr = q_ptr + q_off[:, None] + cc[None, :].to(tl.int64) * sq_c  # [M, BC], channels 0..BC-1
    if ONE_C:  # the whole query tile fits one chunk: load it once for every row and template
        q_tile = tl.load(q_tile_ptr, mask=q_ok[:, None] & (cc[None, :] < C), other=0.0)
        if UPCAST:
            q_tile = q_tile.to(tl.float32)

    fwd = tl.full([M], -1.0, tl.float32)
    y_lo = tl.maximum(y - DY, 0)
    y_hi = tl.minimum(y + DY + 1, H)
    # Usually one chunk of BT >= SPAN template columns; very wide windows take several (unrolled at compile time).
    for j0 in tl.static_range(0, SPAN, BT):
        j = j0 + tl.arange(0, BT)
        tx = x0 - DX + j
        t_ok = (tx >= 0) & (tx < W) & (j < SPAN)
        rel = j[None, :] - qi[:, None] - DX  # template x - query x, the same for every row
        pair_ok = q_ok[:, None] & t_ok[None, :]
        f_mask = pair_ok & (rel <= DF) & (rel >= -DF)
        b_mask = pair_ok & (rel <= DB) & (rel >= -DB)
        b_dst = bwd_ptr + (nb[:, None].to(tl.int64) * H + y_lo) * W + tx[None, :]  # [NB, BT], row y_lo
        b_ok = (nb[:, None] < B) & t_ok[None, :]
        t_y = t_ptr + y_lo.to(tl.int64) * st_h + tx.to(tl.int64) * st_w  # [BT], template 0, row y_lo
        t_cc = cc[:, None].to(tl.int64) * st_c  # [BC, 1]
        t_tile_ok = t_ok[None, :] & (cc[:, None] < C)
        f_acc = tl.full([M, BT], float("-inf"), tl.float32)  # forward candidates, reduced once per chunk
        for yt in range(y_lo, y_hi):
            dy = yt - y
            # m = max over templates of the dot products: the M_s tile of SPEC §2, shared by both directions.
            m = tl.full([M, BT], float("-inf"), tl.float32)
            t_n = t_y
            for n in range(N):
                if FP64:
                    acc = tl.full([M, BT], 0.0, tl.float64)
                    qp = q_ptr + q_off
                    tp = t_n
                    for c in range(C):
                        qa = tl.load(qp, mask=q_ok, other=0.0)
                        tb = tl.load(tp, mask=t_ok, other=0.0)
                        acc += qa[:, None] * tb[None, :]
                        qp += sq_c
                        tp += st_c
                    s = acc.to(tl.float32)
                elif ONE_C:
                    tb = tl.load(t_n[None, :] + t_cc, mask=t_tile_ok, other=0.0)
                    if UPCAST:
                        tb = tb.to(tl.float32)
                    s = tl.dot(q_tile, tb, input_precision=PRECISION, out_dtype=tl.float32)
                else:
                    s = tl.full([M, BT], 0.0, tl.float32)
                    qp = q_tile_ptr
                    tp = t_n[None, :] + t_cc
                    for c0 in range(0, C, BC):
                        c_ok = cc < C - c0
                        qa = tl.load(qp, mask=q_ok[:, None] & c_ok[None, :], other=0.0)
                        tb = tl.load(tp, mask=t_ok[None, :] & c_ok[:, None], other=0.0)
                        if UPCAST:
                            qa = qa.to(tl.float32)
                            tb = tb.to(tl.float32)
                        s = tl.dot(qa, tb, s, input_precision=PRECISION)
                        qp += BC * sq_c
                        tp += BC * st_c
                m = tl.maximum(m, s)
                t_n += st_n
            if (dy <= DF) & (dy >= -DF):
                f_acc = tl.maximum(f_acc, m)
            if (dy <= DB) & (dy >= -DB):
                bcol = tl.max(tl.reshape(tl.where(b_mask, m, float("-inf")), [NB, BX, BT]), axis=1)  # [NB, BT]
                tl.atomic_max(b_dst, bcol, mask=b_ok, sem="relaxed")  # a max needs no ordering
            b_dst += W
            t_y += st_h
        fwd = tl.maximum(fwd, tl.max(tl.where(f_mask, f_acc, float("-inf")), axis=1))
    tl.store(fwd_ptr + (qb.to(tl.int64) * H + y) * W + qx, fwd, mask=q_ok)


_heuristic_kernel = triton.heuristics(
    {
        "BT": lambda a: min(MAX_BT, triton.next_power_of_2(a["BX"] + 2 * a["DX"])),
        "ONE_C": lambda a: a["C"] <= a["BC"],
    }
)(_window_match_kernel)
_tuned_kernel = triton.autotune(configs=_configs(), key=["B", "C", "H", "W", "DF", "DB", "PRECISION", "FP64"])(
    _heuristic_kernel
)


def _kernel_args(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int, precision: str):
    B, C, H, W = query.shape
    df, db = fwd_window // 2, bwd_window // 2
    d = max(df, db)
    fwd = torch.empty((B, H, W), dtype=torch.float32, device=query.device)
    bwd = torch.full((B, H, W), -1.0, dtype=torch.float32, device=query.device)
    args = (query, templates, fwd, bwd, B, templates.shape[0], C, H, W, *query.stride(), *templates.stride())
    meta = dict(
        DF=df, DB=db, DX=min(d, W - 1), DY=min(d, H - 1),
        # The precision flag only affects fp32 operands; 16-bit operands always use tensor cores.
        PRECISION=precision if query.dtype == torch.float32 else "tf32",
        FP64=query.dtype == torch.float64,
        # The interpreter's tl.dot multiplies bf16 bit patterns as integers: give it exact fp32 copies instead
        # (a bf16 x bf16 product is exact in fp32, so the result is what a bf16 MMA with fp32 accumulation gives).
        UPCAST=INTERPRET and query.dtype == torch.bfloat16,
    )

    def grid(m):
        return (triton.cdiv(W, m["BX"]) * H * triton.cdiv(B, m["NB"]),)

    return args, meta, grid, fwd, bwd


def _window_match_op(
    query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel as the ``torch.library`` op ``hetmm::window_match_triton``; inputs as in
    :func:`window_match`, ``precision`` one of ``PRECISIONS``."""
    args, meta, grid, fwd, bwd = _kernel_args(query, templates, fwd_window, bwd_window, precision)
    with device_guard(query):
        wrap_triton(_tuned_kernel)[grid](*args, **meta)
    return fwd, bwd


def device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's (a no-op context for CPU tensors)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


if INTERPRET:
    # Interpreted kernels run numpy on real data, so torch.compile cannot trace into them (triton_op's fake and
    # functional paths would run them on fake tensors): register an opaque custom op with a shape-only fake instead.
    window_match_triton = torch.library.custom_op("hetmm::window_match_triton", mutates_args=())(_window_match_op)

    @window_match_triton.register_fake
    def _(query, templates, fwd_window, bwd_window, precision):
        B, _, H, W = query.shape
        return query.new_empty((B, H, W), dtype=torch.float32), query.new_empty((B, H, W), dtype=torch.float32)
else:
    # triton_op exposes the kernel to torch.compile (fullgraph) and torch.export.
    window_match_triton = triton_op("hetmm::window_match_triton", mutates_args=())(_window_match_op)


def launch_with_config(query, templates, fwd_window: int, bwd_window: int, precision: str = "ieee", **config):
    """Run the kernel with one explicit tile configuration (``BX``, ``NB``, ``BC``, optionally ``num_warps``,
    ``num_stages``), bypassing the autotuner. For tests (every GPU config is checked under the interpreter) and
    benchmarks."""
    args, meta, _, fwd, bwd = _kernel_args(query, templates, fwd_window, bwd_window, precision)
    launch_opts = {k: config.pop(k) for k in ("num_warps", "num_stages") if k in config}
    if INTERPRET:
        launch_opts = {}
    grid = (triton.cdiv(query.shape[3], config["BX"]) * query.shape[2] * triton.cdiv(query.shape[0], config["NB"]),)
    with device_guard(query):
        _heuristic_kernel[grid](*args, **meta, **config, **launch_opts)
    return fwd, bwd


# The hetmm::window_match precisions (hetmm_fast.window_match) as the kernel's fp32 dot precisions.
_OP_PRECISIONS = {"exact": "ieee", "tf32": "tf32"}


def engine(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int,
           precision: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Engine callable of the ``triton`` backend (inputs validated by ``hetmm_fast.window_match``): ``precision``
    "exact" runs exact fp32 dot products (``"ieee"``), "tf32" TF32 ones; other dtypes are unaffected."""
    if precision not in _OP_PRECISIONS:
        raise ValueError(f"hetmm.window_match[triton]: precision must be one of {tuple(_OP_PRECISIONS)}, "
                         f"got {precision!r}")
    return window_match(query, templates, fwd_window, bwd_window, precision=_OP_PRECISIONS[precision])


def default_precision() -> str:
    """fp32 dot precision that follows ``torch.get_float32_matmul_precision()``: "highest" -> "ieee", else "tf32"."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def can_run(tensors) -> list[str]:
    """Reasons the Triton kernel cannot run on these (validated) tensors; ``[]`` when it can."""
    why = []
    for t in tensors:
        if t.device.type == "cuda":
            continue
        if INTERPRET and t.device.type == "cpu":
            continue
        need = "CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before hetmm_fast.triton is imported)"
        why.append(f"inputs on {t.device.type}, the triton kernels need {need}")
        break
    if not INTERPRET and not torch.cuda.is_available():
        why.append("no CUDA device")
    dtypes = {t.dtype for t in tensors}
    bad = sorted(str(d) for d in dtypes if d not in SUPPORTED_DTYPES)
    if bad:
        why.append(f"unsupported dtype {', '.join(bad)}")
    return why


def window_match(
    query: torch.Tensor,
    templates: torch.Tensor,
    fwd_window: int,
    bwd_window: int,
    *,
    precision: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual window matching with the Triton kernel (SPEC §2; same contract as :func:`hetmm_fast.window_match`).

    Args:
        query: Tensor[B, C, H, W] on CUDA (CPU under ``TRITON_INTERPRET=1``), fp16/bf16/fp32/fp64, any strides.
        templates: Tensor[N, C, H, W], same dtype and device.
        fwd_window, bwd_window: odd window sides.
        precision: fp32 dot precision, "ieee" (exact fp32), "tf32" or "tf32x3"; None follows
            ``torch.get_float32_matmul_precision()`` ("highest", the default, gives "ieee"). Ignored for other dtypes.

    Returns:
        (forward, backward): Tensor[B, H, W] float32 each.
    """
    check_window_match(query, templates, fwd_window, bwd_window)
    precision = default_precision() if precision is None else precision
    if precision not in PRECISIONS:
        raise ValueError(f"hetmm.window_match[triton]: precision must be one of {PRECISIONS}, got {precision!r}")
    why = can_run((query, templates))
    if why:
        raise RuntimeError(f"hetmm.window_match[triton]: cannot run: {'; '.join(why)}")
    return torch.ops.hetmm.window_match_triton(query, templates, fwd_window, bwd_window, precision)

"""Pure-PyTorch reference of mutual window matching (SPEC §2): the test oracle, fallback and export path.

For every offset ``s = (dy, dx)`` of the larger window, the pairs (query pixel p, template pixel p + s) are two
equally long contiguous runs of the pixel-major flattened maps, so one ``bmm`` per offset gives
``<q[b, :, p], T[t, :, p + s]>`` for all p, b, t with no copy of the templates; pairs that wrapped around a row end
are masked. ``M_s[b, p] = max_t`` of that is folded into both directions:

* forward[b, p]      = max over offsets s inside the forward window  of M_s[b, p]
* backward[b, p + s] = max over offsets s inside the backward window of M_s[b, p]

Memory: the templates are re-laid pixel-major ``[H*W, C, Nc]`` one chunk of ``Nc`` templates at a time and the
product of one offset is processed ``rows`` query pixels at a time, so beyond the inputs the peak is about
``budget_bytes`` (default 256 MiB) + the pixel-major query copy ``B*C*H*W`` + O(B*H*W) outputs. Nothing of size
``B*N*H*W*k^2`` and no unfolded templates are ever built. Work: ``2*B*N*H*W*k^2*C`` FLOPs, k the larger window.

Numerics: float64 inputs are computed in float64, everything else in float32 (fp16/bf16 are up-cast per chunk);
the outputs are float32. A maximum has no ties to break, so results are exact up to the dot-product rounding.
"""
from __future__ import annotations

import torch

DEFAULT_BUDGET_BYTES = 256 << 20


def window_match(
    query: torch.Tensor,
    templates: torch.Tensor,
    fwd_window: int,
    bwd_window: int,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``query`` Tensor[B, C, H, W], ``templates`` Tensor[N, C, H, W] (validated by the caller) ->
    (forward, backward) Tensor[B, H, W] float32."""
    B, C, H, W = query.shape
    N = templates.shape[0]
    P = H * W
    cdt = torch.float64 if query.dtype == torch.float64 else torch.float32
    df, db = fwd_window // 2, bwd_window // 2
    d = max(df, db)
    dev = query.device

    q = query.to(cdt).permute(2, 3, 0, 1).reshape(P, B, C)  # pixel-major, copied once
    fwd = torch.full((B, P), -1.0, dtype=cdt, device=dev)
    bwd = torch.full((B, P), -1.0, dtype=cdt, device=dev)
    xcoord = torch.arange(P, device=dev) % W
    elt = torch.finfo(cdt).bits // 8
    n_chunk = max(1, min(N, budget_bytes // 2 // max(1, P * C * elt)))
    offsets = [(dy, dx) for dy in range(-d, d + 1) for dx in range(-d, d + 1) if abs(dy) < H and abs(dx) < W]

    # One M_s per offset, accumulated over template chunks before it is folded into fwd/bwd.
    best = torch.full((len(offsets), B, P), -torch.inf, dtype=cdt, device=dev) if n_chunk < N else None
    for n0 in range(0, N, n_chunk):
        t = templates[n0 : n0 + n_chunk].to(cdt).permute(2, 3, 1, 0).reshape(P, C, -1)
        nc = t.shape[2]
        rows = max(1, min(P, budget_bytes // 2 // max(1, B * nc * elt)))
        for i, (dy, dx) in enumerate(offsets):
            s = dy * W + dx
            p0, p1 = max(0, -s), min(P, P - s)
            m = torch.empty((B, p1 - p0), dtype=cdt, device=dev)
            for r0 in range(p0, p1, rows):
                r1 = min(p1, r0 + rows)
                prod = torch.bmm(q[r0:r1], t[r0 + s : r1 + s])  # [rows, B, nc]
                m[:, r0 - p0 : r1 - p0] = prod.amax(dim=2).T
            if best is not None:
                torch.maximum(best[i, :, p0:p1], m, out=best[i, :, p0:p1])
            else:
                _fold(fwd, bwd, m, xcoord, W, dy, dx, df, db, p0, p1, s)
    if best is not None:
        for i, (dy, dx) in enumerate(offsets):
            s = dy * W + dx
            p0, p1 = max(0, -s), min(P, P - s)
            _fold(fwd, bwd, best[i, :, p0:p1], xcoord, W, dy, dx, df, db, p0, p1, s)
    return fwd.reshape(B, H, W).float(), bwd.reshape(B, H, W).float()


def _fold(fwd, bwd, m, xcoord, W, dy, dx, df, db, p0, p1, s) -> None:
    """Fold M_s (query pixels p0..p1) into the running maxima; pairs that wrapped a row end are dropped."""
    x = xcoord[p0:p1] + dx
    m = torch.where((x >= 0) & (x < W), m, torch.full_like(m, -torch.inf))
    if abs(dy) <= df and abs(dx) <= df:
        torch.maximum(fwd[:, p0:p1], m, out=fwd[:, p0:p1])
    if abs(dy) <= db and abs(dx) <= db:
        torch.maximum(bwd[:, p0 + s : p1 + s], m, out=bwd[:, p0 + s : p1 + s])

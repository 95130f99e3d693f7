"""Reference PTS, pixel-level template selection (SPEC §4), written for clarity: the test oracle and fallback.

Per pixel p of ``T[N, C, H, W]``: Gram matrix ``G = X X^T`` of the N template vectors in float64 (from one batched
product over a chunk of pixels), OPTICS on ``D = max(0, 1 - G)``, one medoid per cluster in order of first
appearance ("easy normals"; the global medoid when there is no cluster), then greedy hard normals
``argmin_i sum_{s chosen} G[i, s]``. All ties go to the smallest index. Memory: ``chunk * N * N * 8`` bytes of
Gram matrices at a time (``chunk`` chosen for about 64 MiB).
"""
from __future__ import annotations

from typing import Callable

import torch

from .optics_labels import optics_labels as _sk_optics


def min_samples_for(n: int, size: int) -> int:
    """SPEC §4: ``min_samples = N // K``, at least 2."""
    return max(2, n // size)


def gram_chunks(templates: torch.Tensor, budget_bytes: int = 64 << 20):
    """Yield ``(p0, p1, G)`` with G Tensor[p1-p0, N, N] float64 = per-pixel Gram matrices of pixels p0..p1."""
    N, C, H, W = templates.shape
    P = H * W
    x = templates.reshape(N, C, P)
    chunk = max(1, min(P, budget_bytes // max(1, N * N * 8)))
    for p0 in range(0, P, chunk):
        p1 = min(P, p0 + chunk)
        xc = x[:, :, p0:p1].to(torch.float64).permute(2, 0, 1)  # [p, N, C]
        yield p0, p1, torch.bmm(xc, xc.transpose(1, 2))


def select_from_labels(g: torch.Tensor, labels: torch.Tensor, size: int) -> torch.Tensor:
    """Steps 2-4 of SPEC §4 for one pixel: ``g`` Tensor[N, N] float64, ``labels`` Tensor[N] -> indices Tensor[size]."""
    n = g.shape[0]
    chosen: list[int] = []
    seen: list[int] = []
    for lab in labels.tolist():
        if lab >= 0 and lab not in seen:
            seen.append(lab)
    for lab in seen:
        if len(chosen) == size:
            break
        members = torch.nonzero(labels == lab).flatten()
        score = g[members][:, members].sum(dim=1)
        chosen.append(int(members[int(torch.argmax(score))]))  # argmax returns the first maximum
    if not seen:
        chosen.append(int(torch.argmax(g.sum(dim=1))))
    dp = torch.zeros(n, dtype=g.dtype)
    for s in chosen:  # incrementally, in the order of choice, like the greedy loop below
        dp += g[:, s]
    taken = torch.zeros(n, dtype=torch.bool)
    taken[chosen] = True
    while len(chosen) < size:
        masked = torch.where(taken, torch.full_like(dp, torch.inf), dp)
        i = int(torch.argmin(masked))
        chosen.append(i)
        taken[i] = True
        dp += g[:, i]
    return torch.tensor(chosen, dtype=torch.int64)


def gather_sheets(templates: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``templates`` Tensor[N, C, H, W], ``idx`` Tensor[K, H, W] int64 -> Tensor[K, C, H, W] (contiguous),
    ``out[k, :, y, x] = templates[idx[k, y, x], :, y, x]``."""
    K = idx.shape[0]
    _, C, H, W = templates.shape
    return torch.gather(templates, 0, idx.unsqueeze(1).expand(K, C, H, W))


def pts_labels(templates: torch.Tensor, size: int,
               optics: Callable[[torch.Tensor, int, float], torch.Tensor] = _sk_optics) -> torch.Tensor:
    """``templates`` Tensor[N, C, H, W] -> Tensor[N, H, W] int64: at every pixel the OPTICS labels that the selection
    starts from (``min_samples = max(2, N // size)``, xi = 0.05, -1 = noise), SPEC §4 step 1."""
    N, C, H, W = templates.shape
    ms = min_samples_for(N, min(size, N))
    out = torch.empty((N, H * W), dtype=torch.int64)
    for p0, p1, g in gram_chunks(templates.cpu()):
        out[:, p0:p1] = optics(torch.clamp(1.0 - g, min=0.0), ms, 0.05).cpu().t()
    return out.view(N, H, W).to(templates.device)


def pts_indices(
    templates: torch.Tensor, size: int, optics: Callable[[torch.Tensor, int, float], torch.Tensor] = _sk_optics,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``templates`` Tensor[N, C, H, W] -> indices Tensor[K, H, W] int64 into N, K = min(size, N).

    ``progress(n)`` is called with the number of pixels finished after each chunk.
    """
    N, C, H, W = templates.shape
    if size >= N:
        return torch.arange(N, dtype=torch.int64).view(N, 1, 1).expand(N, H, W).clone()
    ms = min_samples_for(N, size)
    out = torch.empty((size, H * W), dtype=torch.int64)
    for p0, p1, g in gram_chunks(templates.cpu()):
        labels = optics(torch.clamp(1.0 - g, min=0.0), ms, 0.05).cpu()
        for j in range(p1 - p0):
            out[:, p0 + j] = select_from_labels(g[j], labels[j], size)
        if progress is not None:
            progress(p1 - p0)
    return out.view(size, H, W).to(templates.device)

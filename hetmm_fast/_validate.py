"""Boundary checks shared by every backend of every op (STYLE.md rule 4): the message names the op and the values."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_window(op: str, name: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"hetmm.{op}: {name} must be an int, got {type(k).__name__} {k!r}")
    if k <= 0 or k % 2 == 0:
        raise ValueError(f"hetmm.{op}: {name} must be a positive odd int (window k x k, centred), got {k}")
    return k


def check_feature_tensor(op: str, name: str, t, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"hetmm.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"hetmm.{op}: {name} must be 4-D [*, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"hetmm.{op}: {name} dtype must be one of {[str(d) for d in dtypes]}, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"hetmm.{op}: {name} is empty, shape {tuple(t.shape)}")


def check_window_match(query, templates, fwd_window, bwd_window) -> None:
    op = "window_match"
    check_feature_tensor(op, "query", query)
    check_feature_tensor(op, "templates", templates)
    if query.shape[1:] != templates.shape[1:]:
        raise ValueError(
            f"hetmm.{op}: query [B, C, H, W] = {tuple(query.shape)} and templates [N, C, H, W] = "
            f"{tuple(templates.shape)} must have the same C, H, W"
        )
    if query.dtype != templates.dtype:
        raise TypeError(f"hetmm.{op}: query dtype {query.dtype} != templates dtype {templates.dtype}")
    if query.device != templates.device:
        raise ValueError(f"hetmm.{op}: query is on {query.device} but templates on {templates.device}")
    check_window(op, "fwd_window", fwd_window)
    check_window(op, "bwd_window", bwd_window)


def check_optics(dist, min_samples, xi) -> None:
    op = "optics_labels"
    if not isinstance(dist, torch.Tensor):
        raise TypeError(f"hetmm.{op}: dist must be a torch.Tensor, got {type(dist).__name__}")
    if dist.dim() != 3 or dist.shape[1] != dist.shape[2]:
        raise ValueError(f"hetmm.{op}: dist must be [P, N, N] (P square distance matrices), got {tuple(dist.shape)}")
    if dist.dtype != torch.float64:
        raise TypeError(f"hetmm.{op}: dist must be float64, got {dist.dtype}")
    if dist.numel() == 0:
        raise ValueError(f"hetmm.{op}: dist is empty, shape {tuple(dist.shape)}")
    n = dist.shape[1]
    if isinstance(min_samples, bool) or not isinstance(min_samples, int):
        raise TypeError(f"hetmm.{op}: min_samples must be an int, got {type(min_samples).__name__}")
    if not 2 <= min_samples <= n:
        raise ValueError(f"hetmm.{op}: min_samples must be in [2, N={n}], got {min_samples}")
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not 0.0 < float(xi) < 1.0:
        raise ValueError(f"hetmm.{op}: xi must be a float in (0, 1), got {xi!r}")


def check_pts(templates, size) -> None:
    op = "pts_select"
    check_feature_tensor(op, "templates", templates)
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"hetmm.{op}: size must be an int, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"hetmm.{op}: size must be >= 1, got {size}")


def check_values(op: str, name: str, t: torch.Tensor, nonnegative: bool = False) -> None:
    """Values the compiled engines refuse in their kernels (NaN, inf, and negative distances): the reference checks
    them here so that no backend turns them into silent garbage or a foreign library's error. Meta tensors have no
    values to check."""
    if t.device.type == "meta":
        return
    bad = ~torch.isfinite(t)
    if nonnegative:
        bad |= t < 0
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        what = "a finite non-negative value" if nonnegative else "finite"
        raise ValueError(f"hetmm.{op}: {name}{list(where)} = {t[where].item()} is not {what}")

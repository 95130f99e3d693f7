"""The ``cpu`` backend: C++/OpenMP kernels of ``hetmm_fast._C`` behind ``torch.ops.hetmm.*``.

Importing this module loads the compiled extension (``ModuleNotFoundError`` when it was not built, which
``hetmm_fast._backends`` reports as "extension not built"), registers the fake (shape-only) kernels of every
``hetmm`` op so the ops work under ``torch.compile`` / ``FakeTensor`` / ``opcheck``, and registers the ``cpu`` backend
of every op listed in ``_OPS`` whose CPU kernel the extension actually contains.

Numerics of the CPU ``window_match`` (csrc/window_match/window_match.h): float32, float16 and bfloat16 inputs are
computed in float32 (half inputs converted exactly, float32 accumulation), float64 inputs in float64; the outputs are
float32 like the reference's. The op's ``precision`` argument ("exact" or "tf32") is checked and otherwise changes
nothing: the CPU kernel computes exactly for either value.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import _C  # noqa: F401  (loading the library runs the TORCH_LIBRARY registrations)
from . import _backends

WINDOW_MATCH_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def build_features() -> frozenset[str]:
    """Instruction-set features the extension was compiled for: a subset of ``{"avx512f", "avx2", "fma", "f16c",
    "openmp"}`` (empty for a portable x86-64 build without OpenMP). The CPU ``window_match`` rounds differently with
    and without FMA, so its outputs are bit-identical only between builds with the same features (and for any
    thread count within one build)."""
    return frozenset(getattr(_C, "build_features", "").split())


@torch.library.register_fake("hetmm::window_match")
def _window_match_fake(query, templates, fwd_window, bwd_window, precision="exact"):
    B, _, H, W = query.shape
    return query.new_empty((B, H, W), dtype=torch.float32), query.new_empty((B, H, W), dtype=torch.float32)


@torch.library.register_fake("hetmm::optics_labels")
def _optics_labels_fake(dist, min_samples, xi):
    P, N, _ = dist.shape
    return dist.new_empty((P, N), dtype=torch.int64)


@torch.library.register_fake("hetmm::pts_select")
def _pts_select_fake(templates, size):
    _, _, H, W = templates.shape
    return templates.new_empty((size, H, W), dtype=torch.int64)


def _gather_sheets_fake(templates, index):
    _, C, H, W = templates.shape
    return templates.new_empty((index.shape[0], C, H, W))


if hasattr(torch.ops.hetmm, "gather_sheets"):  # absent from builds older than the op
    torch.library.register_fake("hetmm::gather_sheets")(_gather_sheets_fake)


def _pts_labels_fake(templates, size):
    return templates.new_empty(templates.shape[:1] + templates.shape[2:], dtype=torch.int64)


if hasattr(torch.ops.hetmm, "pts_labels"):  # absent from builds older than the op
    torch.library.register_fake("hetmm::pts_labels")(_pts_labels_fake)


def cpu_reasons(tensors: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype]) -> list[str]:
    """Why the CPU kernels cannot take ``tensors``: not on the CPU, or a dtype outside ``dtypes`` ([] = they can)."""
    why = []
    devices = sorted({t.device.type for t in tensors if t.device.type != "cpu"})
    if devices:
        why.append(f"inputs on {', '.join(devices)}, not cpu")
    bad = sorted({str(t.dtype).removeprefix("torch.") for t in tensors if t.dtype not in dtypes})
    if bad:
        why.append(f"dtype {', '.join(bad)} not supported")
    return why


def window_match(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int,
                 precision: str = "exact"):
    """Engine callable (inputs validated by ``hetmm_fast.window_match``): ``query`` Tensor[B, C, H, W],
    ``templates`` Tensor[N, C, H, W] (float32/float16/bfloat16/float64, any strides), ``precision`` "exact" or "tf32"
    (computed exactly either way) -> (forward, backward) Tensor[B, H, W] float32."""
    return torch.ops.hetmm.window_match(query, templates, fwd_window, bwd_window, precision)


def _window_match_can_run(tensors: Sequence[torch.Tensor]) -> list[str]:
    return cpu_reasons(tensors, WINDOW_MATCH_DTYPES)


# ---------------------------------------------------------------------------------------------------------------------
# Registration table: (op, engine callable, can_run). Add one line per op whose CPU kernel exists; an op whose CPU
# kernel is missing from the built extension is skipped, so a stale build never breaks the ladder.
_OPS: list[tuple[str, Callable, Callable[[Sequence[torch.Tensor]], list[str]]]] = [
    ("window_match", window_match, _window_match_can_run),
    ("optics_labels", torch.ops.hetmm.optics_labels.default, lambda ts: cpu_reasons(ts, (torch.float64,))),
    ("pts_select", torch.ops.hetmm.pts_select.default, lambda ts: cpu_reasons(ts, WINDOW_MATCH_DTYPES)),
    ("pts_labels", lambda templates, size: torch.ops.hetmm.pts_labels(templates, size),
     lambda ts: cpu_reasons(ts, WINDOW_MATCH_DTYPES)),
    (
        "gather_sheets",
        lambda templates, index: torch.ops.hetmm.gather_sheets(templates, index),
        lambda ts: cpu_reasons(ts[:1], WINDOW_MATCH_DTYPES) + cpu_reasons(ts[1:], (torch.int64,)),
    ),
]
# ---------------------------------------------------------------------------------------------------------------------


def has_cpu_kernel(op: str) -> bool:
    """True when ``torch.ops.hetmm.<op>`` has a CPU kernel registered (by the loaded extension)."""
    return hasattr(torch.ops.hetmm, op) and torch._C._dispatch_has_kernel_for_dispatch_key(f"hetmm::{op}", "CPU")


REGISTERED: list[str] = []
for _op, _fn, _can_run in _OPS:
    if has_cpu_kernel(_op):
        _backends.register(_op, "cpu", _fn, _can_run)
        REGISTERED.append(_op)

"""The ``cuda`` backend: CUDA kernels of ``hetmm_fast._C`` behind ``torch.ops.hetmm.*`` (CUDA builds of the extension).

Importing this module loads the compiled extension (``ModuleNotFoundError`` when it was not built, reported as
"extension not built") and raises ``_backends.EngineUnavailable("extension built without CUDA ...")`` (an
ImportError) when the extension has no CUDA kernels; otherwise it registers the ``cuda`` backend of every op whose
CUDA kernel the extension contains. The fake (shape-only) kernels of the public ops come from
``hetmm_fast._engine_cpu``; this module adds the fake of the private baseline op.

Numerics (csrc/<op>/<op>_cuda.h):

* ``window_match``: float16 / bfloat16 inputs run on tensor cores (``mma.sync``) with float32 accumulation; float64
  inputs are computed in float64 (outputs float32, like every backend). float32 inputs follow the op's ``precision``
  argument (``torch.ops.hetmm.window_match(..., precision)``; :func:`hetmm_fast.window_match` maps
  ``torch.get_float32_matmul_precision()`` when given none):

  - ``"exact"`` (the schema's default): one sequential float32 FMA chain per dot product, the CPU engine's arithmetic
    (the results are bit-identical to the ``cpu`` backend's);
  - ``"tf32"``: inputs rounded to TF32 (10 mantissa bits, round to nearest) on tensor cores, float32 accumulation;
    about 8x faster, error up to ~2**-10 per unit-vector dot product.

  Nothing is process-wide: the launch knobs that benchmarks and tests vary (warps per block, blocks per tile) are
  arguments of the private op ``hetmm::_window_match_cuda_tuned`` (:func:`window_match_tuned`).
* ``optics_labels`` / ``pts_select``: the CPU engine's arithmetic (float64 Gram matrices as sequential FMA chains,
  scikit-learn's rounding), so labels and chosen indices are identical to the ``cpu`` backend's.

Device requirements: compute capability 8.0 (sm_80) or newer; channel and point limits follow from the device's
shared memory (see :func:`window_match_max_channels`, :func:`max_points`).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from . import _C  # noqa: F401  (loading the library runs the TORCH_LIBRARY registrations)
from . import _backends

if not torch._C._dispatch_has_kernel_for_dispatch_key("hetmm::window_match", "CUDA"):
    raise _backends.EngineUnavailable(
        "extension built without CUDA (hetmm_fast._C has no CUDA kernels; rebuild with nvcc and a CUDA build of torch, "
        "or HETMM_FAST_FORCE_CUDA=1)"
    )

from . import _engine_cpu  # noqa: E402,F401  (fake kernels of the public ops)

PRECISIONS = ("exact", "tf32")
WINDOW_MATCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PTS_DTYPES = WINDOW_MATCH_DTYPES
MIN_CAPABILITY = (8, 0)

@torch.library.register_fake("hetmm::_window_match_naive")
def _window_match_naive_fake(query, templates, fwd_window, bwd_window):
    B, _, H, W = query.shape
    return query.new_empty((B, H, W), dtype=torch.float32), query.new_empty((B, H, W), dtype=torch.float32)


@torch.library.register_fake("hetmm::_window_match_cuda_tuned")
def _window_match_cuda_tuned_fake(query, templates, fwd_window, bwd_window, precision, max_warps, splits):
    B, _, H, W = query.shape
    return query.new_empty((B, H, W), dtype=torch.float32), query.new_empty((B, H, W), dtype=torch.float32)


@functools.lru_cache(maxsize=None)
def window_match_max_channels(dtype: torch.dtype, precision: str, device: int) -> int:
    """Largest channel count the fused kernel takes for ``dtype`` inputs with ``precision`` on CUDA device
    ``device``."""
    return int(torch.ops.hetmm._window_match_cuda_max_channels(dtype, precision, device))


@functools.lru_cache(maxsize=None)
def max_points(op: str, device: int) -> int:
    """Largest N (points per OPTICS problem / templates per pixel) ``op`` takes on CUDA device ``device``."""
    if op == "optics_labels":
        return int(torch.ops.hetmm._optics_labels_cuda_max_points(device))
    return int(torch.ops.hetmm._pts_select_cuda_max_points(device))


@functools.lru_cache(maxsize=None)
def _capability(device: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def device_reasons(tensors: Sequence[torch.Tensor]) -> list[str]:
    """Why the CUDA kernels cannot take ``tensors`` for device reasons ([] = they can)."""
    why = []
    if not torch.cuda.is_available():
        why.append("no CUDA device")
    elsewhere = sorted({t.device.type for t in tensors if t.device.type != "cuda"})
    if elsewhere:
        why.append(f"inputs on {', '.join(elsewhere)}, not cuda")
    if why:
        return why
    for index in sorted({t.device.index for t in tensors}):
        cap = _capability(index)
        if cap < MIN_CAPABILITY:
            why.append(f"CUDA device {index} has compute capability {cap[0]}.{cap[1]}; the kernels need 8.0 (sm_80) "
                       "or newer")
    return why


def _dtype_reasons(tensors: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype]) -> list[str]:
    bad = sorted({str(t.dtype).removeprefix("torch.") for t in tensors if t.dtype not in dtypes})
    return [f"dtype {', '.join(bad)} not supported"] if bad else []


def _window_match_can_run(tensors: Sequence[torch.Tensor]) -> list[str]:
    why = device_reasons(tensors) + _dtype_reasons(tensors, WINDOW_MATCH_DTYPES)
    if why:
        return why
    query = tensors[0]
    # The ladder does not see the precision: a channel count is accepted when both precisions' paths take it.
    cmax = min(window_match_max_channels(query.dtype, p, query.device.index) for p in PRECISIONS)
    if query.shape[1] > cmax:
        why.append(f"C={query.shape[1]} channels exceed the {cmax} the device's shared memory allows for {query.dtype}")
    return why


def _optics_labels_can_run(tensors: Sequence[torch.Tensor]) -> list[str]:
    why = device_reasons(tensors) + _dtype_reasons(tensors, (torch.float64,))
    if why:
        return why
    dist = tensors[0]
    nmax = max_points("optics_labels", dist.device.index)
    if dist.shape[-1] > nmax:
        why.append(f"N={dist.shape[-1]} points exceed the {nmax} the device's shared memory allows")
    return why


def _pts_select_can_run(tensors: Sequence[torch.Tensor]) -> list[str]:
    why = device_reasons(tensors) + _dtype_reasons(tensors, PTS_DTYPES)
    if why:
        return why
    templates = tensors[0]
    nmax = max_points("pts_select", templates.device.index)
    if templates.shape[0] > nmax:
        why.append(f"N={templates.shape[0]} templates exceed the {nmax} the device's shared memory allows")
    return why


def window_match(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int,
                 precision: str = "exact"):
    """Engine callable (inputs validated by ``hetmm_fast.window_match``): ``query`` Tensor[B, C, H, W], ``templates``
    Tensor[N, C, H, W] on one CUDA device (any strides), ``precision`` "exact" or "tf32" (float32 inputs only) ->
    (forward, backward) Tensor[B, H, W] float32."""
    return torch.ops.hetmm.window_match(query, templates, fwd_window, bwd_window, precision)


def window_match_tuned(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int,
                       precision: str = "exact", *, max_warps: int = 0, splits: int = 0):
    """:func:`window_match` with the fused kernel's launch knobs, for benchmarks and tests (``max_warps``: cap of 1,
    2 or 4 warps per block, i.e. 32, 64 or 128 query columns per block; ``splits``: exactly this many blocks (1..1024,
    1 = never split) share each query tile's work; 0 = the automatic choice for either). For finite inputs the
    results do not depend on the knobs (maxima only)."""
    return torch.ops.hetmm._window_match_cuda_tuned(query, templates, fwd_window, bwd_window, precision, max_warps,
                                                    splits)


def optics_labels(dist: torch.Tensor, min_samples: int, xi: float) -> torch.Tensor:
    """Engine callable: ``dist`` Tensor[P, N, N] float64 on CUDA -> labels Tensor[P, N] int64."""
    return torch.ops.hetmm.optics_labels(dist, min_samples, xi)


def pts_select(templates: torch.Tensor, size: int) -> torch.Tensor:
    """Engine callable: ``templates`` Tensor[N, C, H, W] on CUDA, ``size`` < N -> indices Tensor[size, H, W] int64."""
    return torch.ops.hetmm.pts_select(templates, size)


def window_match_naive(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int):
    """Benchmark baseline with the published implementation's structure (one thread per (b, t, y, x), B*N*H*W
    intermediates, then a max over t); float32/float16/bfloat16 CUDA tensors. Not a backend."""
    return torch.ops.hetmm._window_match_naive(query, templates, fwd_window, bwd_window)


_OPS: list[tuple[str, Callable, Callable[[Sequence[torch.Tensor]], list[str]]]] = [
    ("window_match", window_match, _window_match_can_run),
    ("optics_labels", optics_labels, _optics_labels_can_run),
    ("pts_select", pts_select, _pts_select_can_run),
]


def has_cuda_kernel(op: str) -> bool:
    """True when ``torch.ops.hetmm.<op>`` has a CUDA kernel registered (by the loaded extension)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"hetmm::{op}", "CUDA")


REGISTERED: list[str] = []
for _op, _fn, _can_run in _OPS:
    if has_cuda_kernel(_op):
        _backends.register(_op, "cuda", _fn, _can_run)
        REGISTERED.append(_op)

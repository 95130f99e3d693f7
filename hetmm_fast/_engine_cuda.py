"""The ``cuda`` backend: CUDA kernels of ``hetmm_fast._C`` behind ``torch.ops.hetmm.*`` (CUDA builds of the extension).

Importing this module loads the compiled extension (``ModuleNotFoundError`` when it was not built, reported as
"extension not built") and raises ``_backends.EngineUnavailable("extension built without CUDA ...")`` (an
ImportError) when the extension has no CUDA kernels; otherwise it registers the ``cuda`` backend of every op whose
CUDA kernel the extension contains. The fake (shape-only) kernels of the public ops come from
``hetmm_fast._engine_cpu``; this module adds the fake of the private baseline op.

Numerics (csrc/<op>/<op>_cuda.h):

* ``window_match``: float16 / bfloat16 inputs run on tensor cores (``mma.sync``) with float32 accumulation; float64
  inputs are computed in float64 (outputs float32, like every backend). float32 inputs follow the precision setting:

  - ``"exact"`` (default): one sequential float32 FMA chain per dot product, the CPU engine's arithmetic (the results
    are bit-identical to the ``cpu`` backend's);
  - ``"tf32"``: inputs rounded to TF32 (10 mantissa bits, round to nearest) on tensor cores, float32 accumulation;
    about 8x faster, error up to ~2**-10 per unit-vector dot product.

  Choose with :func:`set_precision` (or the :func:`precision` context manager), or the environment variable
  ``HETMM_CUDA_PRECISION=exact|tf32`` read at import. The setting is process-wide and also applies to direct calls of
  ``torch.ops.hetmm.window_match`` on CUDA tensors.
* ``optics_labels`` / ``pts_select``: the CPU engine's arithmetic (float64 Gram matrices as sequential FMA chains,
  scikit-learn's rounding), so labels and chosen indices are identical to the ``cpu`` backend's.

Device requirements: compute capability 8.0 (sm_80) or newer; channel and point limits follow from the device's
shared memory (see :func:`window_match_max_channels`, :func:`max_points`).
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, ContextManager, Iterator, Sequence

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

# Path codes of csrc/window_match/window_match_cuda.h (WindowMatchCudaPath).
_PATH_FP16, _PATH_BF16, _PATH_TF32, _PATH_EXACT32, _PATH_EXACT64 = range(5)


def set_precision(mode: str) -> None:
    """Arithmetic of float32 inputs to the CUDA ``window_match``: ``"exact"`` (float32 FMA, default) or ``"tf32"``
    (tensor cores, inputs rounded to TF32). Process-wide."""
    if mode not in PRECISIONS:
        raise ValueError(f"hetmm_fast cuda: precision must be one of {PRECISIONS}, got {mode!r}")
    torch.ops.hetmm._cuda_set_fp32_precision(mode)


def get_precision() -> str:
    """The current float32 precision of the CUDA ``window_match`` (``"exact"`` or ``"tf32"``)."""
    return torch.ops.hetmm._cuda_fp32_precision()


@contextlib.contextmanager
def _setting(get: Callable[[], object], set_: Callable[[object], None], value: object) -> Iterator[None]:
    """Context manager: ``set_(value)`` for the block, then the value ``get()`` gave before (a refused value changes
    nothing)."""
    old = get()
    set_(value)
    try:
        yield
    finally:
        set_(old)


def precision(mode: str) -> ContextManager[None]:
    """Context manager: ``with precision("tf32"): ...`` restores the previous setting on exit."""
    return _setting(get_precision, set_precision, mode)


def max_warps(warps: int) -> ContextManager[None]:
    """Tuning context for benchmarks: cap the fused ``window_match`` kernel at ``warps`` (1, 2 or 4) warps per block,
    i.e. 32, 64 or 128 query columns per block; 0 restores the automatic choice (the largest tile whose shared
    memory fits, unless it leaves multiprocessors idle). Results do not depend on it; process-wide."""
    return _setting(torch.ops.hetmm._cuda_window_match_max_warps, torch.ops.hetmm._cuda_set_window_match_max_warps,
                    warps)


def splits(count: int) -> ContextManager[None]:
    """Tuning context for benchmarks and tests: share each query tile's work (its template chunks x neighbourhood
    pixels) among exactly ``count`` blocks (1..1024; 1 = never split); 0 restores the automatic choice (split only
    when even the smallest tile leaves multiprocessors idle, as at batch 1, for about two blocks per
    multiprocessor). For finite inputs the results do not depend on it (maxima only); process-wide."""
    return _setting(torch.ops.hetmm._cuda_window_match_splits, torch.ops.hetmm._cuda_set_window_match_splits, count)


_env_precision = os.environ.get("HETMM_CUDA_PRECISION", "").strip().lower()
if _env_precision:
    set_precision(_env_precision)


@torch.library.register_fake("hetmm::_window_match_naive")
def _window_match_naive_fake(query, templates, fwd_window, bwd_window):
    B, _, H, W = query.shape
    return query.new_empty((B, H, W), dtype=torch.float32), query.new_empty((B, H, W), dtype=torch.float32)


@functools.lru_cache(maxsize=None)
def window_match_max_channels(path: int, device: int) -> int:
    """Largest channel count the fused kernel takes for precision path ``path`` on CUDA device ``device``."""
    return int(torch.ops.hetmm._window_match_cuda_max_channels(path, device))


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


def _window_match_path(dtype: torch.dtype) -> int:
    if dtype == torch.float16:
        return _PATH_FP16
    if dtype == torch.bfloat16:
        return _PATH_BF16
    if dtype == torch.float64:
        return _PATH_EXACT64
    return _PATH_TF32 if get_precision() == "tf32" else _PATH_EXACT32


def _window_match_can_run(tensors: Sequence[torch.Tensor]) -> list[str]:
    why = device_reasons(tensors) + _dtype_reasons(tensors, WINDOW_MATCH_DTYPES)
    if why:
        return why
    query = tensors[0]
    cmax = window_match_max_channels(_window_match_path(query.dtype), query.device.index)
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


def window_match(query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int):
    """Engine callable (inputs validated by ``hetmm_fast.window_match``): ``query`` Tensor[B, C, H, W], ``templates``
    Tensor[N, C, H, W] on one CUDA device (any strides) -> (forward, backward) Tensor[B, H, W] float32."""
    return torch.ops.hetmm.window_match(query, templates, fwd_window, bwd_window)


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

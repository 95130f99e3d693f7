"""Public ``window_match``: fused mutual template matching (SPEC §2), dispatched to the best backend."""
from __future__ import annotations

import torch

from .. import _backends
from .._validate import check_window_match
from ..reference.window_match import window_match as _reference

PRECISIONS = ("exact", "tf32")


def _reference_engine(query, templates, fwd_window, bwd_window, precision):
    return _reference(query, templates, fwd_window, bwd_window)


_backends.register("window_match", "torch", _reference_engine, lambda tensors: [])


def default_precision() -> str:
    """The ``precision`` that :func:`window_match` uses when given none: ``torch.get_float32_matmul_precision()``
    mapped, "highest" (torch's default) -> "exact", "high" or "medium" -> "tf32"."""
    return "exact" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def window_match(
    query: torch.Tensor,
    templates: torch.Tensor,
    fwd_window: int = 13,
    bwd_window: int = 7,
    backend: str | None = None,
    *,
    precision: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual window matching of query features against templates (SPEC §2).

    Args:
        query: Tensor[B, C, H, W], float16/bfloat16/float32/float64, L2-normalised over C at every pixel
            (the op does not normalise).
        templates: Tensor[N, C, H, W], same dtype, device, C, H and W.
        fwd_window: odd window side k_f of the forward direction (query pixel fixed, template neighbourhood searched).
        bwd_window: odd window side k_b of the backward direction (template pixel fixed, query neighbourhood searched).
            Any positive odd int: a window wider than the map is clipped at the border like every other window.
        backend: None for the best available (ladder cuda > triton > cpu > torch, or ``HETMM_BACKEND``), or a name
            to force; raises RuntimeError with the reasons if that backend cannot run these inputs.
        precision: arithmetic of float32 inputs, passed to the engine with the inputs (it is an argument of the
            ``hetmm::window_match`` op, so ``torch.compile``, ``torch.export`` and ``opcheck`` see it; the op keeps no
            process-wide setting):

            - ``"exact"``: IEEE float32 products and sums (float64 inputs in float64);
            - ``"tf32"``: float32 inputs may be multiplied on TF32 tensor cores (10 mantissa bits) with float32
              accumulation, an error up to ~2**-10 per unit-vector dot product; the ``cuda`` and ``triton`` engines
              do so;
            - None (default): :func:`default_precision`, i.e. ``torch.get_float32_matmul_precision()`` "highest"
              (torch's default) gives "exact", "high" or "medium" give "tf32".

            float16, bfloat16 and float64 inputs compute the same for either value. The ``cpu`` engine computes
            exactly for either value; the ``torch`` reference does its products with ``torch.bmm``, which is exact on
            a CPU and on a GPU follows torch's own TF32 switch (``torch.backends.cuda.matmul.allow_tf32``).

    Returns:
        (forward, backward): Tensor[B, H, W] float32 each; the max cosine similarity over templates and window
        positions clipped at the border, with -1 as the initial value of the running max.

    Any strides are accepted. The CUDA kernel streams both inputs pixel-major and repacks them on every call unless
    they already are (see :func:`pixel_major`): templates matched many times are worth converting once.
    """
    check_window_match(query, templates, fwd_window, bwd_window)
    if precision is None:
        precision = default_precision()
    elif precision not in PRECISIONS:
        raise ValueError(f"hetmm.window_match: precision must be one of {PRECISIONS} or None, got {precision!r}")
    _, fn = _backends.select("window_match", backend, (query, templates))
    # A window wider than the map sees the whole map, as the widest window that fits does (offsets up to
    # max(H, W) - 1): every engine gets at most that one, so no loop, tile or index is ever sized by a huge window.
    widest = 2 * max(query.shape[2], query.shape[3]) - 1
    return fn(query, templates, min(fwd_window, widest), min(bwd_window, widest), precision)


def pixel_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` Tensor[M, C, H, W] with the same values and shape, its memory laid out ``[H][W][M][C]``
    (``x.permute(2, 3, 0, 1)`` contiguous); returns ``x`` itself when it already is.

    This is the layout the CUDA :func:`window_match` kernel reads: given templates (or a query) in it, with C a
    multiple of 128 bytes (64 channels in float16/bfloat16, 32 in float32, 16 in float64), the kernel reads them in
    place instead of packing a copy on every call (float32 with ``precision="tf32"`` still copies, to round). Every
    backend accepts the layout; :class:`hetmm_fast.HETMM` keeps its templates this way on a GPU.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"hetmm.pixel_major: expected a Tensor[M, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"hetmm.pixel_major: expected a 4-D Tensor[M, C, H, W], got shape {tuple(x.shape)}")
    hwmc = x.permute(2, 3, 0, 1)
    return x if hwmc.is_contiguous() else hwmc.contiguous().permute(2, 3, 0, 1)

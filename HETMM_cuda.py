"""``HETMM_cuda``: drop-in replacement for the compiled module of the published HETMM code, on hetmm_fast's engines.

The published code (``src/utils.py``) compiles its own kernels with ``torch.utils.cpp_extension.load(name=
'HETMM_cuda', ...)`` and later does ``from HETMM_cuda import forward_ATM, backward_ATM, PTS``. With hetmm_fast
installed, delete that ``load(...)`` call (or replace it by ``import HETMM_cuda``) and nothing else changes::

    forward_ATM(query: Tensor[B, C, H, W], temp: Tensor[T, C, H, W], patch: int) -> Tensor[B, T, H, W]
    backward_ATM(query, temp, patch) -> Tensor[B, T, H, W]
    PTS(temp: Tensor[N, C, H, W], clus: Tensor[N, H, W] int64, tsize: int) -> Tensor[tsize, C, H, W]

CPU or CUDA tensors of any strides. ``set_mode("fused")`` (or ``HETMM_COMPAT_MODE=fused``) makes the two matching
functions return the maximum over all templates at every t (enough for callers that reduce with ``.amax(dim=1)``,
as the published one does; not per-template values); ``"exact"`` is the default. Definitions, numerics and the
template-file tools: :mod:`hetmm_fast.compat`.
"""
from hetmm_fast.compat import MODES, PTS, backward_ATM, forward_ATM, get_mode, set_mode

__all__ = ["MODES", "PTS", "backward_ATM", "forward_ATM", "get_mode", "set_mode"]

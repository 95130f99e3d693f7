"""Compatibility with the published HETMM code: its compiled module's three functions, its template files.

The published code imports ``forward_ATM``, ``backward_ATM`` and ``PTS`` from a module ``HETMM_cuda`` that it
compiles from its own naive kernels, and keeps its templates in ``torch.save`` files under
``template/<dataset>/<category>/``:

* ``<backbone>_ALL.pkl``: dict ``"layer1".."layer4" -> Tensor[N, C, H, W]``, the L2-normalised features of the N
  normal images (float32, or float16 when run with ``--half``);
* ``<backbone>_PC_OPTICSx{K}.pkl``: dict ``layer -> Tensor[N, H, W]`` float32, scikit-learn OPTICS labels per pixel
  (``min_samples = N // K``, distance ``1 - <a, b>``; -1 = noise);
* ``<backbone>_PTSx{K}.pkl``: dict ``layer -> Tensor[K, C, H, W]``, the K sheets PTS chose.

This module gives the three functions on hetmm_fast's engines (the top-level module ``HETMM_cuda`` shipped with the
package re-exports them), computes the clusters file in seconds (:func:`write_official_clusters`), and converts
template files to and from hetmm_fast banks (:func:`import_official`, :func:`export_official`). Files are read with
``torch.load(..., weights_only=True)`` (no code is ever unpickled) and written atomically.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
from pathlib import Path

import torch

from . import __version__
from .ops import pts_labels, window_match
from .ops.pts_select import _gather
from .reference.pts_select import gram_chunks

__all__ = ["MODES", "OFFICIAL_WEIGHTS_ID", "OfficialFileError", "PTS", "backward_ATM", "export_official",
           "forward_ATM", "get_mode", "import_official", "optics_clusters", "read_official", "set_mode",
           "write_official_clusters"]

MODES = ("exact", "fused")
MODE_ENV = "HETMM_COMPAT_MODE"
_FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_mode: str | None = None


class OfficialFileError(ValueError):
    """An official template, clusters or PTS file cannot be used: the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------------- matching mode
def set_mode(mode: str | None) -> None:
    """Choose what :func:`forward_ATM` and :func:`backward_ATM` return, for the whole process.

    ``"exact"`` (the default): the per-template maxima ``out[b, t]`` of the published definition, one call of the
    fused op per template. ``"fused"``: one call of the fused op over all templates; every ``out[b, t]`` then holds
    the maximum over *all* templates (the fused maxima expanded along T, a stride-0 view, no B*T*H*W memory). That
    is exactly what a caller reducing with ``.amax(dim=1)`` (the published ``ATMM.match``) gets from either mode;
    any other use of the T axis (per-template values, ``argmax`` over T, a mean or sum over T) is wrong in fused
    mode. ``None`` goes back to the environment variable ``HETMM_COMPAT_MODE`` (``exact`` when unset).
    """
    global _mode
    if mode is not None and mode not in MODES:
        raise ValueError(f"HETMM_cuda.set_mode: mode must be one of {MODES} or None, got {mode!r}")
    _mode = mode


def get_mode() -> str:
    """The mode in force: the last :func:`set_mode`, else ``$HETMM_COMPAT_MODE``, else ``"exact"``."""
    if _mode is not None:
        return _mode
    mode = os.environ.get(MODE_ENV, "").strip().lower() or "exact"
    if mode not in MODES:
        raise ValueError(f"HETMM_cuda: {MODE_ENV}={os.environ[MODE_ENV]!r} is not one of {MODES}")
    return mode


# ------------------------------------------------------------------------------------------------------- matching
def _window(op: str, patch) -> int:
    if isinstance(patch, bool) or not isinstance(patch, int):
        raise TypeError(f"HETMM_cuda.{op}: patch must be an int, got {type(patch).__name__} {patch!r}")
    if patch < 0:
        raise ValueError(f"HETMM_cuda.{op}: patch must be >= 0, got {patch}")
    return 2 * (patch // 2) + 1


def _check_pair(op: str, query, temp) -> None:
    for name, t in (("query", query), ("temp", temp)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"HETMM_cuda.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"HETMM_cuda.{op}: {name} must be 4-D [*, C, H, W], got shape {tuple(t.shape)}")
        if t.dtype not in _FEATURE_DTYPES:
            raise TypeError(f"HETMM_cuda.{op}: {name} dtype must be float16, bfloat16, float32 or float64, got "
                            f"{t.dtype}")
    if query.shape[1:] != temp.shape[1:]:
        raise ValueError(f"HETMM_cuda.{op}: query [B, C, H, W] = {tuple(query.shape)} and temp [T, C, H, W] = "
                         f"{tuple(temp.shape)} must have the same C, H, W")
    if query.dtype != temp.dtype:
        raise TypeError(f"HETMM_cuda.{op}: query dtype {query.dtype} != temp dtype {temp.dtype}")
    if query.device != temp.device:
        raise ValueError(f"HETMM_cuda.{op}: query is on {query.device} but temp on {temp.device}")
    if 0 in query.shape[1:]:
        raise ValueError(f"HETMM_cuda.{op}: C, H and W must be positive, got query shape {tuple(query.shape)}")


def _atm(op: str, query: torch.Tensor, temp: torch.Tensor, patch: int, direction: int) -> torch.Tensor:
    _check_pair(op, query, temp)
    k = _window(op, patch)
    windows = (k, 1) if direction == 0 else (1, k)
    B, _, H, W = query.shape
    T = temp.shape[0]
    if B == 0 or T == 0:
        return query.new_empty((B, T, H, W))
    # The published kernels multiply in IEEE float32: never TF32, whatever torch's matmul precision says.
    if get_mode() == "fused":
        best = window_match(query, temp, *windows, precision="exact")[direction]
        return best.to(query.dtype).unsqueeze(1).expand(B, T, H, W)
    out = query.new_empty((B, T, H, W))
    for t in range(T):
        out[:, t] = window_match(query, temp[t : t + 1], *windows, precision="exact")[direction]
    return out


def forward_ATM(query: torch.Tensor, temp: torch.Tensor, patch: int) -> torch.Tensor:
    """Forward template matching of the published API: query pixel fixed, template neighbourhood searched.

    Args:
        query: Tensor[B, C, H, W], float16/bfloat16/float32/float64, any strides, CPU or CUDA.
        temp: Tensor[T, C, H, W], same dtype and device.
        patch: window parameter: the window is a square of side ``2 * (patch // 2) + 1`` centred on the pixel and
            clipped at the border (no padding); an even ``patch`` means the next odd side, 0 and 1 mean 1x1.

    Returns:
        Tensor[B, T, H, W] in the query's dtype,
        ``out[b, t, y, x] = max(-1, max over (y', x') in the window of <query[b, :, y, x], temp[t, :, y', x']>)``.
        In fused mode (:func:`set_mode`) every ``out[b, t]`` is the maximum over all t instead.

    Numerics: the engines (:func:`hetmm_fast.window_match`, ladder cuda > triton > cpu > torch, ``HETMM_BACKEND``)
    accumulate 16-bit inputs in float32 and float64 inputs in float64 (the CPU and torch engines; see
    window_match for the others), and return float32, so a float64 result carries one float32 rounding.
    """
    return _atm("forward_ATM", query, temp, patch, 0)


def backward_ATM(query: torch.Tensor, temp: torch.Tensor, patch: int) -> torch.Tensor:
    """Backward template matching of the published API: template pixel fixed, query neighbourhood searched.

    Same arguments, modes and numerics as :func:`forward_ATM`; returns Tensor[B, T, H, W] with
    ``out[b, t, y, x] = max(-1, max over (y', x') in the window of <query[b, :, y', x'], temp[t, :, y, x]>)``.
    """
    return _atm("backward_ATM", query, temp, patch, 1)


# ------------------------------------------------------------------------------------------------------------- PTS
def _check_pts(temp, clus, tsize) -> None:
    op = "HETMM_cuda.PTS"
    if not isinstance(temp, torch.Tensor) or not isinstance(clus, torch.Tensor):
        raise TypeError(f"{op}: temp and clus must be torch.Tensors, got {type(temp).__name__} and "
                        f"{type(clus).__name__}")
    if temp.dim() != 4 or temp.dtype not in _FEATURE_DTYPES:
        raise ValueError(f"{op}: temp must be a floating-point Tensor[N, C, H, W], got {temp.dtype} "
                         f"{tuple(temp.shape)}")
    if 0 in temp.shape:
        raise ValueError(f"{op}: temp is empty, shape {tuple(temp.shape)}")
    if clus.dtype != torch.int64:
        raise TypeError(f"{op}: clus must be int64 cluster labels (-1 = noise), got {clus.dtype}; pass "
                        "clus.long() for labels stored as floats")
    if tuple(clus.shape) != (temp.shape[0], *temp.shape[2:]):
        raise ValueError(f"{op}: clus must be [N, H, W] = {(temp.shape[0], *temp.shape[2:])} for temp "
                         f"{tuple(temp.shape)}, got {tuple(clus.shape)}")
    if clus.device != temp.device:
        raise ValueError(f"{op}: temp is on {temp.device} but clus on {clus.device}")
    if isinstance(tsize, bool) or not isinstance(tsize, int) or tsize < 1:
        raise ValueError(f"{op}: tsize must be a positive int, got {tsize!r}")
    if bool((clus < -1).any()):
        raise ValueError(f"{op}: clus holds {int(clus.min())}; labels are -1 (noise) or cluster ids >= 0")
    if not bool(torch.isfinite(temp).all()):
        raise ValueError(f"{op}: temp holds NaN or infinite values")


def _choose(g: torch.Tensor, lab: torch.Tensor, k: int) -> torch.Tensor:
    """PTS choice rules for P pixels at once: ``g`` Tensor[P, N, N] float64 Gram matrices, ``lab`` Tensor[P, N]
    labels -> Tensor[P, k] chosen indices (k <= N). Every sum runs in ascending index order, one addition at a time
    (adding 0.0 for a non-member changes nothing), as in ``hetmm_fast.testing.pts_transcription``."""
    P, n = lab.shape
    idx = torch.arange(n, device=lab.device)
    rows = torch.arange(P, device=lab.device)
    valid = lab >= 0
    same = (lab[:, :, None] == lab[:, None, :]) & valid[:, :, None]  # same[p, i, j]: j in the cluster of i
    first = same.to(torch.uint8).argmax(dim=2)  # the first member of i's cluster
    is_rep = valid & (first == idx)
    n_clusters = is_rep.sum(dim=1)
    in_cluster = torch.zeros((P, n), dtype=torch.float64, device=g.device)
    total = torch.zeros((P, n), dtype=torch.float64, device=g.device)
    for j in range(n):
        col = g[:, :, j]
        in_cluster += torch.where(same[:, :, j], col, 0.0)
        total += col
    # medoid[p, r]: the member of r's cluster with the largest in-cluster sum (argmax: first maximum).
    medoid = torch.where(same, in_cluster[:, None, :], -torch.inf).argmax(dim=2)
    reps = torch.argsort((~is_rep).to(torch.uint8), dim=1, stable=True)  # representatives first, ascending
    easy = medoid.gather(1, reps)
    global_medoid = total.argmax(dim=1)
    first_choices = torch.where((n_clusters > 0)[:, None], easy, global_medoid[:, None])
    n_first = torch.where(n_clusters > 0, n_clusters.clamp(max=k), 1)
    chosen = torch.empty((P, k), dtype=torch.int64, device=g.device)
    dp = torch.zeros((P, n), dtype=torch.float64, device=g.device)
    taken = torch.zeros((P, n), dtype=torch.bool, device=g.device)
    for m in range(k):
        pick = torch.where(taken, torch.inf, dp).argmin(dim=1)  # argmin: first minimum
        c = torch.where(m < n_first, first_choices[:, m], pick)
        chosen[:, m] = c
        dp += g[rows, :, c]
        taken[rows, c] = True
    return chosen


def PTS(temp: torch.Tensor, clus: torch.Tensor, tsize: int) -> torch.Tensor:
    """Pixel-level template selection of the published API, with the cluster labels given.

    Args:
        temp: Tensor[N, C, H, W] (the ALL set of one layer), float16/bfloat16/float32/float64, CPU or CUDA.
        clus: Tensor[N, H, W] int64 cluster labels per pixel, -1 = noise (the published clusters file holds them
            as floats: pass ``.long()``).
        tsize: K, the number of sheets.

    Returns:
        Tensor[K, C, H, W] in temp's dtype. At every pixel independently, with ``s(i, j) = <x_i, x_j>`` the dot
        product of that pixel's C-vectors accumulated in float64: (a) the clusters in order of first appearance
        over the template index; for each, the member with the largest sum of s over its cluster (itself
        included; ties to the lowest index), stopping once K are chosen; (b) if no template is in a cluster, the
        global medoid (largest sum of s over all N; ties to the lowest index); (c) then greedily the unchosen
        template with the smallest sum of s over the chosen ones (ties to the lowest index) until K or none is
        left; (d) when N < K, sheets N..K-1 are zeros. This is SPEC §4 steps 2-4 with given labels, plus (d).

    Numerics: sums over templates run in ascending index order, one float64 addition at a time, as the CPU
    engine's (csrc/pts_select/pts_select.h); the dot products themselves come from one batched float64 product
    (torch.bmm), whose summation order over C is the BLAS library's, not the engine's sequential one. Choices can
    therefore differ from the engine's only where two compared sums are within a few ulps; exact ties (duplicate
    templates) stay ties.
    """
    _check_pts(temp, clus, tsize)
    N, C, H, W = temp.shape
    k = min(tsize, N)
    lab = clus.reshape(N, H * W)
    idx = torch.empty((k, H * W), dtype=torch.int64, device=temp.device)
    for p0, p1, g in gram_chunks(temp):
        idx[:, p0:p1] = _choose(g, lab[:, p0:p1].t(), k).t()
    sheets = _gather(temp, idx.view(k, H, W), "cuda" if temp.is_cuda else "cpu")
    if tsize > N:
        sheets = torch.cat([sheets, sheets.new_zeros((tsize - N, C, H, W))])
    return sheets


# ------------------------------------------------------------------------------------------------------ clustering
def _min_samples(n: int, tsize: int, where: str) -> int:
    if isinstance(tsize, bool) or not isinstance(tsize, int) or tsize < 1:
        raise ValueError(f"{where}: tsize must be a positive int, got {tsize!r}")
    m = n // tsize
    if m < 2:
        raise ValueError(f"{where}: min_samples = N // tsize = {n} // {tsize} = {m}; scikit-learn's OPTICS refuses "
                         "min_samples below 2, so the published code cannot cluster these templates either. "
                         f"Use tsize <= {n // 2} (or more templates).")
    return m


def optics_clusters(tdict: dict, tsize: int, backend: str | None = None) -> dict:
    """The published clusters of every layer of ``tdict``, computed with :func:`hetmm_fast.pts_labels` (the compiled
    engine's Gram products and OPTICS, all pixels in parallel).

    Args:
        tdict: dict ``layer -> Tensor[N, C, H, W]`` (an official ALL file's content, L2-normalised features).
        tsize: K; ``min_samples = N // K`` as in the published code (ValueError when that is below 2, where
            scikit-learn refuses).
        backend: see :func:`hetmm_fast.window_match`.

    Returns:
        dict ``layer -> Tensor[N, H, W]`` float32 on the CPU (the published file's format): at every pixel, labels
        whose partition equals scikit-learn's ``OPTICS(min_samples=N // K, metric=lambda a, b: 1 - a @ b)``
        (xi 0.05) on that pixel's N vectors; -1 = noise. Distances are ``max(0, 1 - <x_i, x_j>)`` in float64 (the
        clip only removes rounding noise below zero), as :func:`hetmm_fast.pts_select` builds them.
    """
    out = {}
    for key, t in tdict.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point() or 0 in t.shape:
            raise ValueError(f"optics_clusters: {key!r} must be a non-empty floating-point Tensor[N, C, H, W], got "
                             f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
        _min_samples(t.shape[0], tsize, f"optics_clusters({key!r})")  # refuses what scikit-learn would
        # With N // tsize >= 2, pts_labels clusters with exactly min_samples = N // tsize, xi = 0.05.
        out[key] = pts_labels(t, tsize, backend=backend).float().cpu()
    return out


# ---------------------------------------------------------------------------------------------------------- files
_LAYER_KEY = re.compile(r"layer[1-4]")


def read_official(path, what: str = "template") -> dict:
    """Read an official ``torch.save`` dict ``"layer1".. -> Tensor`` with ``weights_only=True``, on the CPU.

    Raises FileNotFoundError, or :class:`OfficialFileError` for a file that is not such a dict (foreign pickle,
    truncated, other keys, non-tensor or non-float values, values of unequal leading size, NaN/inf)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"official {what} file not found: {path}")
    if not path.is_file():
        raise OfficialFileError(f"{path}: not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for corrupt or foreign files
        raise OfficialFileError(f"{path}: not a readable official {what} file (torch.load with weights_only=True "
                                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(obj, dict) or not obj:
        raise OfficialFileError(f"{path}: an official {what} file holds a non-empty dict 'layer1'.. -> Tensor, got "
                                f"{type(obj).__name__}")
    bad = [k for k in obj if not (isinstance(k, str) and _LAYER_KEY.fullmatch(k))]
    if bad:
        raise OfficialFileError(f"{path}: unexpected keys {bad!r} (an official {what} file has 'layer1'..'layer4')")
    n = None
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.numel() == 0:
            raise OfficialFileError(f"{path}: {k} must be a non-empty floating-point tensor, got "
                                    f"{type(v).__name__} {getattr(v, 'dtype', '')}")
        if n is not None and v.shape[0] != n:
            raise OfficialFileError(f"{path}: {k} has {v.shape[0]} entries along dim 0, other layers {n}")
        n = v.shape[0]
        if not bool(torch.isfinite(v).all()):
            raise OfficialFileError(f"{path}: {k} holds NaN or infinite values")
    return dict(sorted(obj.items()))


def _write_official(path: Path, obj: dict) -> None:
    from .bank import _atomic_target

    with _atomic_target(path) as tmp:
        torch.save({k: v.detach().cpu().contiguous().clone() for k, v in obj.items()}, tmp)


def _templates_dict(path) -> dict:
    tdict = read_official(path, "template")
    for k, v in tdict.items():
        if v.dim() != 4:
            raise OfficialFileError(f"{path}: {k} must be Tensor[N, C, H, W], got shape {tuple(v.shape)}")
    return tdict


def write_official_clusters(all_path, tsize: int, out=None, backend: str | None = None) -> Path:
    """Compute the clusters of an official ``<backbone>_ALL.pkl`` (:func:`optics_clusters`) and write
    ``<backbone>_PC_OPTICSx{tsize}.pkl`` beside it (or to ``out``) atomically; returns the path written."""
    all_path = Path(all_path)
    if out is None:
        if not all_path.name.endswith("_ALL.pkl"):
            raise ValueError(f"{all_path}: expected an official '<backbone>_ALL.pkl' file name (or give out=)")
        out = all_path.with_name(f"{all_path.name[: -len('_ALL.pkl')]}_PC_OPTICSx{tsize}.pkl")
    clusters = optics_clusters(_templates_dict(all_path), tsize, backend=backend)
    out = Path(out)
    _write_official(out, clusters)
    return out


# ------------------------------------------------------------------------------------------------ banks both ways
OFFICIAL_BACKBONE = "wide_resnet101_2"
OFFICIAL_IMAGE_SIZE = 256
_OFFICIAL_CHANNELS = (256, 512, 1024)
_OFFICIAL_STRIDES = (4, 8, 16)
_OFFICIAL_TAPS = ("layer1", "layer2", "layer3")
# Backbones of the published code that hetmm_fast also has (the same pre-ReLU layer1..3 taps).
_OFFICIAL_BACKBONES = ("resnet18", "wide_resnet50_2", "wide_resnet101_2")
# Recorded when no weights file is given at import and torchvision's cache holds none: the bank then loads with no
# backbone (HETMM.load refuses it) until it is imported again with the weights the templates were computed with.
OFFICIAL_WEIGHTS_ID = "official-templates:wide_resnet101_2 (weights unknown: import with --weights FILE)"


def _recover_indices(path, layer: str, all_t: torch.Tensor, sheets: torch.Tensor) -> torch.Tensor:
    """Indices ``idx`` Tensor[K, H, W] with ``all_t[idx[k, y, x], :, y, x] == sheets[k, :, y, x]`` bit for bit."""
    N, C, H, W = all_t.shape
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[all_t.element_size()]
    weights = torch.randint(-(2**62), 2**62, (C,), generator=torch.Generator().manual_seed(0)) | 1

    def fingerprint(t):  # [M, H, W] int64: a hash of each vector's bits (int64 arithmetic wraps around)
        return (t.view(bits).to(torch.int64) * weights.view(1, C, 1, 1)).sum(dim=1)

    fa, fs = fingerprint(all_t), fingerprint(sheets)
    idx = torch.empty((sheets.shape[0], H, W), dtype=torch.int64)
    for k in range(sheets.shape[0]):
        hit = fa == fs[k]  # [N, H, W]
        if not bool(hit.any(dim=0).all()):
            y, x = (int(v) for v in (~hit.any(dim=0)).nonzero()[0])
            raise OfficialFileError(f"{path}: {layer} sheet {k} at pixel ({y}, {x}) is none of the ALL file's "
                                    "templates there (a PTS file of other templates, or zero sheets of a tsize "
                                    "above N)")
        idx[k] = hit.to(torch.uint8).argmax(dim=0)
    if not torch.equal(torch.gather(all_t, 0, idx.unsqueeze(1).expand(-1, C, H, W)), sheets):
        raise OfficialFileError(f"{path}: {layer} sheets do not equal the ALL file's templates")
    return idx


def _weights_id(weights, pretrained: bool) -> str:
    from .backbones.weights import file_weights_id, torchvision_cache_path

    if not pretrained:
        if weights is not None:
            raise ValueError("import_official: weights given with pretrained=False; pass one or the other")
        return "random"
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"import_official: weights file not found: {weights}")
        return file_weights_id(weights)
    import torchvision.models as tvm

    cached = torchvision_cache_path(tvm.Wide_ResNet101_2_Weights.IMAGENET1K_V1.url)
    return file_weights_id(cached) if os.path.isfile(cached) else OFFICIAL_WEIGHTS_ID


def import_official(all_path, category: str, out, pts=None, weights=None, pretrained: bool = True) -> Path:
    """Build a hetmm_fast bank from the published code's template files, without recomputing any feature.

    Args:
        all_path: ``wide_resnet101_2_ALL.pkl`` (layer1..3 are used; layer4, which the published matching never
            reads, is dropped). Expected shapes at 256 px: [N, 256, 64, 64], [N, 512, 32, 32], [N, 1024, 16, 16],
            float32, float16 or bfloat16, unit vectors at every pixel.
        category: MVTec AD category: the bank gets the paper preset of that category.
        out: bank file to write (atomically).
        pts: optional ``wide_resnet101_2_PTSx{K}.pkl`` of the same ALL set: its sheets are matched bit for bit to
            the ALL templates and stored as the bank's selection (tsize K).
        weights: the Wide-ResNet-101-2 weights file the templates were computed with (torchvision's
            ``wide_resnet101_2-32ee1156.pth``); the bank records its id, and loading the bank needs the same file
            (``HETMM.load(bank, weights=FILE)``, ``--weights FILE``). Without it, the file in torchvision's cache is
            used when present, else :data:`OFFICIAL_WEIGHTS_ID` is recorded and HETMM.load refuses the bank.
        pretrained: False records a randomly initialised backbone ("random"; ``HETMM.load(bank,
            pretrained=False)``), for tests and timing only.

    Returns the bank path. Raises FileNotFoundError or :class:`OfficialFileError` naming the file and problem.
    """
    from .bank import save_bank
    from .presets import IMAGENET_MEAN, PAPER_STD, get_preset

    preset = get_preset("paper", category)
    weights_id = _weights_id(weights, pretrained)
    tdict = _templates_dict(all_path)
    sizes = [OFFICIAL_IMAGE_SIZE // s for s in _OFFICIAL_STRIDES]
    layers = []
    for key, c, s in zip(_OFFICIAL_TAPS, _OFFICIAL_CHANNELS, sizes):
        t = tdict.get(key)
        if t is None:
            raise OfficialFileError(f"{all_path}: no {key} (an official ALL file holds layer1..layer4)")
        if tuple(t.shape[1:]) != (c, s, s):
            raise OfficialFileError(f"{all_path}: {key} has shape {tuple(t.shape)}, expected [N, {c}, {s}, {s}] "
                                    f"({OFFICIAL_BACKBONE} at {OFFICIAL_IMAGE_SIZE} px)")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise OfficialFileError(f"{all_path}: {key} is {t.dtype}; banks hold float32, float16 or bfloat16")
        norm = t.double().norm(dim=1)
        if float((norm - 1).abs().max()) > 1e-2:
            raise OfficialFileError(f"{all_path}: {key} is not L2-normalised over channels (norms from "
                                    f"{float(norm.min()):.4g} to {float(norm.max()):.4g}); not HETMM templates")
        layers.append(t.contiguous())
    if len({t.dtype for t in layers}) != 1:
        raise OfficialFileError(f"{all_path}: layers have different dtypes {[str(t.dtype) for t in layers]}")
    n = layers[0].shape[0]
    tensors = {f"all.{j}": t for j, t in enumerate(layers)}
    tsize = None
    if pts is not None:
        pdict = read_official(pts, "PTS")
        for j, (key, t) in enumerate(zip(_OFFICIAL_TAPS, layers)):
            p = pdict.get(key)
            if p is None:
                raise OfficialFileError(f"{pts}: no {key}")
            if p.dim() != 4 or tuple(p.shape[1:]) != tuple(t.shape[1:]) or p.dtype != t.dtype:
                raise OfficialFileError(f"{pts}: {key} is {p.dtype} {tuple(p.shape)}, expected {t.dtype} "
                                        f"[K, {', '.join(str(d) for d in t.shape[1:])}] like the ALL file")
            tensors[f"sel.{j}"] = _recover_indices(pts, key, t, p)
        tsize = int(pdict["layer1"].shape[0])
    dtype = str(layers[0].dtype).removeprefix("torch.")
    meta = {
        "backbone": OFFICIAL_BACKBONE, "weights_id": weights_id, "taps": list(_OFFICIAL_TAPS),
        "strides": list(_OFFICIAL_STRIDES), "channels": list(_OFFICIAL_CHANNELS),
        "image_size": OFFICIAL_IMAGE_SIZE, "mean": list(IMAGENET_MEAN), "std": list(PAPER_STD),
        "preset": preset.to_json(), "windows": preset.windows, "tsize": tsize, "n_templates": n,
        "feature_sizes": [[s, s] for s in sizes], "dtype": dtype, "backbone_dtype": "float32",
        "template_names": [f"{Path(all_path).name}[{i}]" for i in range(n)], "hetmm_fast_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": "official HETMM templates: " + ", ".join(Path(p).name for p in (all_path, pts) if p is not None),
    }
    return save_bank(out, tensors, meta)


def export_official(bank, out_dir) -> list[Path]:
    """Write a bank's templates as the published code reads them: ``<out_dir>/<backbone>_ALL.pkl`` (layer1..3)
    and, when the bank has a selection, ``<backbone>_PTSx{K}.pkl`` (the selected sheets). Both files are written to
    temporary names first and renamed only when both are complete. Returns the paths written.

    Only banks of a backbone the published code has (resnet18, wide_resnet50_2, wide_resnet101_2) with its
    normalisation (ImageNet mean, std (0.229, 0.256, 0.225)) are exported: other templates would not match the
    query features the published code computes.
    """
    from .bank import _atomic_target, load_bank
    from .presets import IMAGENET_MEAN, PAPER_STD

    tensors, meta = load_bank(bank)
    if meta["backbone"] not in _OFFICIAL_BACKBONES:
        raise ValueError(f"{bank}: backbone {meta['backbone']!r} is not one of the published code's "
                         f"{_OFFICIAL_BACKBONES}")
    if list(meta["mean"]) != list(IMAGENET_MEAN) or list(meta["std"]) != list(PAPER_STD):
        raise ValueError(f"{bank}: normalised with mean {meta['mean']} and std {meta['std']}, but the published code "
                         f"uses mean {list(IMAGENET_MEAN)} and std {list(PAPER_STD)} (build the bank with "
                         "--preset paper)")
    if list(meta["taps"]) != list(_OFFICIAL_TAPS):
        raise ValueError(f"{bank}: taps {meta['taps']} are not the published code's {list(_OFFICIAL_TAPS)}")
    out_dir = Path(out_dir)
    name = meta["backbone"]
    files = {out_dir / f"{name}_ALL.pkl": {tap: tensors[f"all.{j}"] for j, tap in enumerate(meta["taps"])}}
    if meta["tsize"] is not None:
        files[out_dir / f"{name}_PTSx{meta['tsize']}.pkl"] = {
            tap: _gather(tensors[f"all.{j}"], tensors[f"sel.{j}"], "cpu") for j, tap in enumerate(meta["taps"])}
    with contextlib.ExitStack() as stack:
        for path, obj in files.items():
            tmp = stack.enter_context(_atomic_target(path))
            torch.save({k: v.contiguous().clone() for k, v in obj.items()}, tmp)
    return list(files)

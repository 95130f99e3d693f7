"""Template bank files: tensors in safetensors, metadata as JSON in its header; never pickle.

Layout: tensors ``all.{j}`` (the ALL set of layer j, Tensor[N, C_j, H_j, W_j]) and, after PTS, ``sel.{j}`` (chosen
indices Tensor[K, H_j, W_j] int64). The header metadata holds ``format`` = ``hetmm_fast.bank``, ``format_version``
and ``meta`` (JSON: backbone, weights, taps, strides, channels, image size, normalisation, preset, windows, tsize,
template count, library version, creation time) and ``sha256`` (JSON: digest of every tensor's bytes), so a file that
is truncated, bit-flipped, foreign or inconsistent is rejected with a message saying which. Writes go to a temporary
file in the destination folder, are fsynced and then atomically renamed: a crash never leaves a half-written bank.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path

import torch

FORMAT = "hetmm_fast.bank"
FORMAT_VERSION = 1
REQUIRED_META = ("backbone", "weights_id", "taps", "strides", "channels", "image_size", "mean", "std", "preset",
                 "tsize", "n_templates", "feature_sizes")


class BankError(ValueError):
    """A bank file cannot be used: the message names the file and the problem."""


def _digest(t: torch.Tensor) -> str:
    # Flattened first: a 0-d tensor cannot be viewed as bytes of another element size.
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def save_bank(path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically write ``tensors`` (CPU copies are taken) and ``meta`` to ``path``."""
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise BankError(f"save_bank: metadata lacks {missing}")
    path = Path(path)
    if path.is_dir():
        raise BankError(f"save_bank: {path} is a directory")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "meta": json.dumps(meta, sort_keys=True),
        "sha256": json.dumps({k: _digest(v) for k, v in cpu.items()}, sort_keys=True),
    }
    with _atomic_target(path) as tmp:
        save_file(cpu, tmp, metadata=header)
    return path


@contextlib.contextmanager
def _atomic_target(path: Path):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``, else delete it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Bytes per element of the safetensors dtypes a bank may hold (what torch reads back from safetensors).
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_FLOAT_CODES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
MAX_HEADER_BYTES = 100 * 2**20  # real headers are kilobytes; this bounds what a lying length prefix can make us read
MAX_RANK = 8


def load_bank(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a bank: returns (tensors on CPU, meta). Raises BankError naming the problem
    (FileNotFoundError when nothing is at ``path``).

    The safetensors header is read and checked against the file's size first (length prefix, JSON, every entry's
    dtype, shape and byte range), so a header that lies about sizes is refused before anything is allocated for it;
    the file is opened once and safetensors reads that same open file, so a concurrent atomic replacement of
    ``path`` is seen either wholly or not at all.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except FileNotFoundError:
        raise FileNotFoundError(f"bank file not found: {path}") from None
    except OSError as exc:
        raise BankError(f"{path}: cannot open the bank file ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BankError(f"{path} is not a regular file")
        entries, header = _read_header(path, fd, info.st_size)
        tensors = _read_tensors(path, fd, entries)
    finally:
        os.close(fd)
    version = header.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise BankError(f"{path}: bank format version {version} is not supported (this hetmm_fast reads {FORMAT_VERSION})")
    try:
        meta = _json(header["meta"])
        digests = _json(header["sha256"])
    except (KeyError, ValueError, RecursionError) as exc:
        raise BankError(f"{path}: bank metadata is missing or not valid JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict):
        raise BankError(f"{path}: bank metadata 'meta' must be a JSON object, got {type(meta).__name__}")
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise BankError(f"{path}: bank metadata 'sha256' must map tensor names to hex digests")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise BankError(f"{path}: bank metadata lacks {missing}")
    if set(digests) != set(tensors):
        raise BankError(f"{path}: tensor list {sorted(tensors)} does not match the recorded {sorted(digests)}")
    for k, t in tensors.items():
        if _digest(t) != digests[k]:
            raise BankError(f"{path}: tensor {k!r} is corrupt (checksum mismatch)")
    _check_meta(path, meta)
    _check_shapes(path, tensors, meta)
    return tensors, meta


def _unreadable(path, why: str) -> BankError:
    return BankError(f"{path} is not a readable bank file (corrupt, truncated or not safetensors): {why}")


def _json(text):
    """``json.loads`` refusing duplicate keys and NaN/Infinity (neither is JSON; safetensors rejects both)."""
    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key in JSON object: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
        return dict(items)

    def constant(name):
        raise ValueError(f"{name} is not JSON")

    if not isinstance(text, str):
        raise ValueError(f"expected JSON text, got {type(text).__name__}")
    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_header(path, fd: int, size: int) -> tuple[list[tuple[str, str, list[int], int, int]], dict]:
    """Check the safetensors header of the open file ``fd`` of ``size`` bytes against that size.

    Returns the tensor entries (name, dtype, shape, begin, end; offsets absolute in the file, sorted by begin) and
    the ``__metadata__`` dict, after checking: the length prefix fits the file and MAX_HEADER_BYTES; the header is a
    UTF-8 JSON object; each entry has a known dtype, a shape of at most MAX_RANK non-negative ints and a byte range
    inside the file of exactly itemsize * prod(shape) bytes; the ranges tile the data section without gap or
    overlap (the format's rule); the metadata is a str -> str map naming this format.
    """
    if size < 8:
        raise _unreadable(path, f"{size} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(os.pread(fd, 8, 0), "little")
    if n > size - 8 or n > MAX_HEADER_BYTES:
        raise _unreadable(path, f"header length {n} exceeds the file ({size} bytes) or the {MAX_HEADER_BYTES}-byte limit")
    raw = os.pread(fd, n, 8)
    if len(raw) != n:
        raise _unreadable(path, f"file shrank while reading its header ({len(raw)} of {n} bytes)")
    try:
        header = _json(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _unreadable(path, f"header is not UTF-8 JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict):
        raise _unreadable(path, f"header must be a JSON object, got {type(header).__name__}")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _unreadable(path, "__metadata__ must map strings to strings")
    if meta.get("format") != FORMAT:
        raise BankError(f"{path} is a safetensors file but not a hetmm_fast bank (format={meta.get('format')!r})")
    data_start, data_size = 8 + n, size - 8 - n
    entries = []
    for name, e in header.items():
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise _unreadable(path, f"tensor {name!r}: entry must hold dtype, shape and data_offsets")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise _unreadable(path, f"tensor {name!r}: unknown dtype {dtype!r} (expected one of {sorted(_ITEMSIZE)})")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(_is_int(d) and d >= 0 for d in shape)):
            raise _unreadable(path, f"tensor {name!r}: shape must be a list of at most {MAX_RANK} non-negative ints, "
                                    f"got {_short(shape)}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise _unreadable(path, f"tensor {name!r}: data_offsets {_short(offsets)} are not a byte range inside "
                                    f"the {data_size}-byte data section")
        itemsize = _ITEMSIZE[dtype]
        nbytes, bound = itemsize, itemsize  # bound: the bytes the shape would need with its zero sides taken as 1
        for d in shape:
            nbytes *= d
            bound *= max(d, 1)
        if bound > max(data_size, itemsize) or nbytes != offsets[1] - offsets[0]:
            raise _unreadable(path, f"tensor {name!r}: {dtype} {shape} needs {nbytes} bytes but data_offsets "
                                    f"{offsets} hold {offsets[1] - offsets[0]} (data section {data_size} bytes)")
        entries.append((name, dtype, shape, data_start + offsets[0], data_start + offsets[1]))
    entries.sort(key=lambda t: (t[3], t[4]))
    end = data_start
    for name, _, _, begin, stop in entries:
        if begin != end:
            raise _unreadable(path, f"tensor {name!r} starts at data byte {begin - data_start}, expected "
                                    f"{end - data_start} (tensors must tile the data section)")
        end = stop
    if end != size:
        raise _unreadable(path, f"tensors end at data byte {end - data_start} but the data section has {data_size}")
    return entries, meta


def _short(x, limit: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_tensors(path, fd: int, entries) -> dict[str, torch.Tensor]:
    """Every tensor of the checked header, read by safetensors from the file open as ``fd``."""
    from safetensors import safe_open

    # /proc/self/fd/N re-opens the very file already checked, not whatever ``path`` names by now.
    source = f"/proc/self/fd/{fd}" if os.path.exists(f"/proc/self/fd/{fd}") else str(path)
    try:
        with safe_open(source, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - safetensors' errors (a Rust panic is a BaseException)
        raise _unreadable(path, f"{type(exc).__name__}: {exc}") from exc
    expected = {name: (_ITEMSIZE[dtype], shape) for name, dtype, shape, _, _ in entries}
    got = {k: (t.element_size(), list(t.shape)) for k, t in tensors.items()}
    if got != expected:
        raise _unreadable(path, "safetensors read other tensors than the header lists")
    return tensors


def _check_meta(path, meta) -> None:
    """The metadata fields the loader and :meth:`HETMM.load` use, with the types and ranges they assume."""
    def bad(key, want):
        raise BankError(f"{path}: bank metadata {key}={_short(meta.get(key))} must be {want}")

    def pos_int(x):
        return _is_int(x) and x >= 1

    from .backbones.build import BACKBONES

    if meta["backbone"] not in BACKBONES:
        bad("backbone", f"one of this hetmm_fast's backbones {BACKBONES}")
    if not isinstance(meta["weights_id"], str):
        bad("weights_id", "a str")
    if not pos_int(meta["n_templates"]):
        bad("n_templates", "a positive int")
    if meta["tsize"] is not None and not pos_int(meta["tsize"]):
        bad("tsize", "null or a positive int")
    image_size = meta["image_size"]
    if not (pos_int(image_size) and image_size % 16 == 0):
        bad("image_size", "a positive multiple of 16")
    layers = meta["channels"]
    if not (isinstance(layers, list) and layers and all(pos_int(c) for c in layers)):
        bad("channels", "a non-empty list of positive ints")
    for key in ("taps", "strides", "feature_sizes"):
        if not isinstance(meta[key], list) or len(meta[key]) != len(layers):
            bad(key, f"a list of {len(layers)} entries (one per layer, like channels)")
    if not all(pos_int(s) for s in meta["strides"]):
        bad("strides", "positive ints")
    sizes = meta["feature_sizes"]
    if not all(isinstance(s, list) and len(s) == 2 and all(pos_int(v) for v in s) for s in sizes):
        bad("feature_sizes", "[height, width] pairs of positive ints")
    if sizes != [[image_size // s, image_size // s] for s in meta["strides"]]:
        bad("feature_sizes", f"image_size // stride per layer for image_size {image_size} and strides "
                             f"{meta['strides']}")
    for key in ("mean", "std"):
        v = meta[key]
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                             for x in v)):
            bad(key, "a list of 3 numbers")
    try:
        preset = _json(meta["preset"])
    except (ValueError, RecursionError):
        preset = None
    if not isinstance(preset, dict):
        bad("preset", "a preset as the JSON text of an object")
    _check_preset(path, preset, len(layers), image_size)
    names = meta.get("template_names", [])
    if not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
        bad("template_names", "a list of str")


def _check_preset(path, preset: dict, n_layers: int, image_size: int) -> None:
    """The numbers of a bank's preset that matching and post-processing use: one entry per layer with positive odd
    windows and finite weights; post-processing kernels of bounded size (a preset object checks the rest)."""
    def finite(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    layers = preset.get("layers")
    if not isinstance(layers, list) or len(layers) != n_layers:
        raise BankError(f"{path}: bank preset must give {n_layers} layers (one per tapped layer), got {_short(layers)}")
    for j, p in enumerate(layers):
        if not isinstance(p, dict):
            raise BankError(f"{path}: bank preset layer {j} must be an object, got {_short(p)}")
        for key in ("fwd_window", "bwd_window"):
            k = p.get(key)
            if not (_is_int(k) and k >= 1 and k % 2 == 1):
                raise BankError(f"{path}: bank preset layer {j} {key}={_short(k)} must be a positive odd int")
        for key in ("alpha", "lam"):
            if not finite(p.get(key)):
                raise BankError(f"{path}: bank preset layer {j} {key}={_short(p.get(key))} must be a finite number")
    for key in ("image_post", "pixel_post", "pro_post"):
        post = preset.get(key)
        if not isinstance(post, dict):
            raise BankError(f"{path}: bank preset {key} must be an object, got {_short(post)}")
        # A max-pool must fit the S x S map; a blur kernel far wider than the map only spans zero padding, and its
        # padded copy of the map grows with it.
        ksize, sigma = post.get("ksize", 0), post.get("sigma", 0.0)
        most = image_size if post.get("kind") == "maxpool" else 2 * image_size + 64
        if not (_is_int(ksize) and 0 <= ksize <= most) or not (finite(sigma) and sigma >= 0):
            raise BankError(f"{path}: bank preset {key} needs ksize in [0, {most}] and a finite sigma >= 0, got "
                            f"ksize={_short(ksize)}, sigma={_short(sigma)}")


def _check_shapes(path, tensors, meta) -> None:
    n, k = meta["n_templates"], meta["tsize"]
    want_dtype = meta.get("dtype", "float32")
    for j, (c, (h, w)) in enumerate(zip(meta["channels"], meta["feature_sizes"])):
        t = tensors.get(f"all.{j}")
        if t is None or tuple(t.shape) != (n, c, h, w):
            raise BankError(f"{path}: layer {j} templates have shape {None if t is None else tuple(t.shape)}, "
                            f"metadata says {(n, c, h, w)}")
        have_dtype = str(t.dtype).removeprefix("torch.")
        if have_dtype not in _FLOAT_CODES.values() or (want_dtype in ("float32", "float16", "bfloat16")
                                                       and have_dtype != want_dtype):
            raise BankError(f"{path}: layer {j} templates are {have_dtype}, metadata says dtype {want_dtype}")
        if not bool(torch.isfinite(t).all()):  # features are unit vectors: NaN/inf would only make NaN scores
            raise BankError(f"{path}: layer {j} templates hold NaN or infinite values")
        s = tensors.get(f"sel.{j}")
        if k is None:
            if s is not None:
                raise BankError(f"{path}: selection indices present but tsize is null")
        elif s is None or tuple(s.shape) != (k, h, w) or s.dtype != torch.int64:
            raise BankError(f"{path}: layer {j} selection has shape {None if s is None else tuple(s.shape)}, "
                            f"metadata says {(k, h, w)} int64")
        elif s.numel() and (int(s.min()) < 0 or int(s.max()) >= n):
            raise BankError(f"{path}: layer {j} selection indices out of range [0, {n})")


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    with _atomic_target(path) as tmp:
        Path(tmp).write_text(text)
    return path

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
import os
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
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


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


def load_bank(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a bank: returns (tensors on CPU, meta). Raises BankError naming the problem."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bank file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise BankError(f"{path} is a safetensors file but not a hetmm_fast bank (format={header.get('format')!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except BankError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled headers
        raise BankError(f"{path} is not a readable bank file (corrupt, truncated or not safetensors): {exc}") from exc
    version = header.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise BankError(f"{path}: bank format version {version} is not supported (this hetmm_fast reads {FORMAT_VERSION})")
    try:
        meta = json.loads(header["meta"])
        digests = json.loads(header["sha256"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise BankError(f"{path}: bank metadata is missing or not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise BankError(f"{path}: bank metadata lacks {missing}")
    if set(digests) != set(tensors):
        raise BankError(f"{path}: tensor list {sorted(tensors)} does not match the recorded {sorted(digests)}")
    for k, t in tensors.items():
        if _digest(t) != digests[k]:
            raise BankError(f"{path}: tensor {k!r} is corrupt (checksum mismatch)")
    _check_shapes(path, tensors, meta)
    return tensors, meta


def _check_shapes(path, tensors, meta) -> None:
    n, k = meta["n_templates"], meta["tsize"]
    for j, (c, (h, w)) in enumerate(zip(meta["channels"], meta["feature_sizes"])):
        t = tensors.get(f"all.{j}")
        if t is None or tuple(t.shape) != (n, c, h, w):
            raise BankError(f"{path}: layer {j} templates have shape {None if t is None else tuple(t.shape)}, "
                            f"metadata says {(n, c, h, w)}")
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

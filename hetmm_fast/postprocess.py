"""Anomaly-map post-processing of SPEC §3: Gaussian blur with zero padding and the max-pool image score."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .presets import PostProcess


def gaussian_kernel1d(sigma: float, ksize: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``exp(-((i - (K-1)/2) / sigma)^2 / 2)`` for i = 0..K-1; the 2-D kernel is its outer product normalised to 1,
    which equals the outer product of this vector normalised to 1."""
    i = torch.arange(ksize, dtype=torch.float64)
    k = torch.exp(-(((i - (ksize - 1) / 2) / sigma) ** 2) / 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma: float, ksize: int) -> torch.Tensor:
    """Tensor[B, H, W] -> Tensor[B, H, W]; zero padding ``ksize // 2`` (SPEC §3). For even ``ksize`` the output
    would grow by one pixel, so it is cropped back to H x W (top-left aligned)."""
    B, H, W = maps.shape
    k = gaussian_kernel1d(sigma, ksize, maps.dtype, maps.device)
    x = maps.unsqueeze(1)
    x = F.conv2d(x, k.view(1, 1, ksize, 1), padding=(ksize // 2, 0))
    x = F.conv2d(x, k.view(1, 1, 1, ksize), padding=(0, ksize // 2))
    return x[:, 0, :H, :W]


def maxpool_score(maps: torch.Tensor, ksize: int) -> torch.Tensor:
    """Tensor[B, H, W] -> Tensor[B]: mean over the grid of a K x K max-pool, stride K, remainder dropped."""
    if ksize > min(maps.shape[-2:]):
        raise ValueError(f"maxpool_score: pool size {ksize} exceeds the map size {tuple(maps.shape[-2:])}")
    return F.max_pool2d(maps.unsqueeze(1), ksize, stride=ksize).flatten(1).mean(dim=1)


def apply_map(maps: torch.Tensor, post: PostProcess) -> torch.Tensor:
    """A post-processed map (``maxpool`` leaves maps unchanged: it only defines an image score)."""
    return gaussian_blur(maps, post.sigma, post.ksize) if post.kind == "blur" else maps


def image_scores(maps: torch.Tensor, post: PostProcess) -> torch.Tensor:
    """Image score under ``post``: max of the (blurred) map, or the max-pool mean."""
    if post.kind == "maxpool":
        return maxpool_score(maps, post.ksize)
    return apply_map(maps, post).flatten(1).amax(dim=1)

"""Channel attention: ECA and squeeze-and-excitation (the SE baseline ECA-Net compares against).

ECA: Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020. Official code: BangguWu/ECANet (``models/eca_module.py``).
SE: Hu, Shen, Sun. "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ECA", "SqueezeExcite", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size ψ(C) = |log2(C)/γ + b/γ|_odd (ECA-Net Eq. 12), as the paper's snippet
    computes it: t = int(|(log2 C + b)/γ|), k = t if t is odd else t + 1.

    C = 64 → 3; C = 128…1024 → 5; C = 2048 → 7.
    """
    if channels < 1:
        raise ValueError(f"eca_kernel_size: channels must be >= 1, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention: global average pooling, a 1D convolution of size k across channels
    (no dimensionality reduction), sigmoid, rescaling. Exactly k parameters.

    Args:
        channels: number of channels C, used for the adaptive kernel size when ``kernel_size`` is None.
        kernel_size: explicit odd k (the official checkpoints use per-stage lists, e.g. 3, 5, 5, 7 for R50).
        gamma, b: constants of the adaptive kernel size (ECA-Net uses γ = 2, b = 1).

    Shape: (B, C, *spatial) → same.
    """

    def __init__(self, channels: int | None = None, kernel_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__()
        if kernel_size is None:
            if channels is None:
                raise ValueError("ECA: give `channels` (for the adaptive kernel size) or `kernel_size`")
            kernel_size = eca_kernel_size(channels, gamma, b)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ECA: kernel_size must be a positive odd integer, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"ECA: expected (B, C, *spatial), got shape {tuple(x.shape)}")
        y = x.flatten(2).mean(-1, keepdim=True).transpose(-1, -2)  # (B, 1, C)
        y = self.conv(y).transpose(-1, -2).sigmoid()  # (B, C, 1)
        return x * y.view(*y.shape[:2], *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation baseline: GAP → FC(C→C/r) → ReLU → FC(C/r→C) → sigmoid → rescale.

    Shape: (B, C, *spatial) → same. Parameters: 2·C²/r + C/r + C.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1):
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(2).mean(-1)
        y = self.fc2(F.relu(self.fc1(y))).sigmoid()
        return x * y.view(*y.shape, *([1] * (x.dim() - 2)))

"""Attention primitives: ECA channel attention, squeeze-and-excitation, multi-head self-attention (global or
over local windows) and cross-attention.

ECA: Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020. Official code: BangguWu/ECANet (``models/eca_module.py``).
SE: Hu, Shen, Sun. "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ECA",
    "CrossAttention",
    "MultiHeadAttention",
    "SqueezeExcite",
    "eca_kernel_size",
    "window_partition",
    "window_reverse",
]


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


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, C, H, W) feature maps into non-overlapping window×window windows, zero-padding H and W up
    to multiples of ``window``.

    Returns:
        tokens (B·nH·nW, window², C) and the padded size (Hp, Wp) to undo it with :func:`window_reverse`.
    """
    b, c, h, w = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, c, hp // window, window, wp // window, window)
    x = x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window * window, c)
    return x, (hp, wp)


def window_reverse(tokens: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nH·nW, window², C) → (B, C, H, W), cropping the padding."""
    hp, wp = padded
    nh, nw = hp // window, wp // window
    c = tokens.shape[-1]
    x = tokens.view(-1, nh, nw, window, window, c).permute(0, 5, 1, 3, 2, 4).reshape(-1, c, hp, wp)
    return x[:, :, : size[0], : size[1]]


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product self-attention on tokens (B, N, C), or on feature maps (B, C, H, W)
    over local windows when ``window`` is set (inputs that do not divide are zero-padded, then cropped).

    Args:
        dim: token dimension C.
        num_heads: heads; ``dim`` must divide by it unless ``head_dim`` is given.
        head_dim: per-head dimension (default dim // num_heads).
        qkv_bias: bias on the q, k, v projection.
        attn_drop, proj_drop: dropout on attention weights and on the output.
        window: window size for (B, C, H, W) inputs; None attends globally.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        window: int | None = None,
    ):
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"MultiHeadAttention: dim {dim} is not divisible by num_heads {num_heads}")
            head_dim = dim // num_heads
        self.num_heads, self.head_dim, self.window = num_heads, head_dim, window
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return self._attend(x)
        if x.dim() != 4:
            raise ValueError(f"MultiHeadAttention: expected (B, N, C) or (B, C, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.window is None:
            tokens = x.flatten(2).transpose(1, 2)
            return self._attend(tokens).transpose(1, 2).reshape(x.shape)
        tokens, padded = window_partition(x, self.window)
        return window_reverse(self._attend(tokens), self.window, padded, (h, w))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``x`` (B, Nq, C), keys and values from ``context``
    (B, Nk, C_ctx). Optional boolean ``key_padding_mask`` (B, Nk), True where a key must be ignored.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        context_dim: int | None = None,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossAttention: dim {dim} is not divisible by num_heads {num_heads}")
        context_dim = context_dim or dim
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, nq, c = x.shape
        nk = context.shape[1]
        q = self.q(x).view(b, nq, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(context).view(b, nk, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != (b, nk):
                raise ValueError(
                    f"CrossAttention: key_padding_mask must be ({b}, {nk}), got {tuple(key_padding_mask.shape)}"
                )
            mask = ~key_padding_mask.bool().view(b, 1, 1, nk)
        out = F.scaled_dot_product_attention(
            q, kv[0], kv[1], attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, nq, c)))

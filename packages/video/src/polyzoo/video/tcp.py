"""TCP: temporal-attentive covariance pooling, a drop-in replacement for global average pooling in video networks.

Paper: Zilin Gao, Qilong Wang, Bingbing Zhang, Qinghua Hu, Peihua Li. "Temporal-attentive Covariance Pooling
Networks for Video Recognition", NeurIPS 2021. Official code: the TCP repository (``ops/TCP/TCP_module.py``,
``ops/TCP/TCP_att_module.py``, ``ops/TCP/TSA.py``, ``ops/TCP/TCA.py``, ``ops/MPNCOV/MPNCOV.py``), built on TSM.

Pipeline of :class:`TCPHead` on frame features ``(N·T, C_in, H, W)`` (N clips of T frames):

1. dimension reduction C_in → 256 → d (default 2048 → 256 → 128): twice 1×1 conv (no bias) + BN + ReLU;
2. temporal attention (:class:`TemporalAttention`, paper §3.2):
   - TSA (:class:`TemporalSpatialAttention`): φ₋₁(x_{t−1}), φ₋₂(x_{t−2}) give an HW×HW affinity
     softmax(φ₋₁ᵀφ₋₂ / √d) that aggregates φ₀(x_t); BN (γ = 0 at init) and a residual: x + BN(φ₀ A);
     past frames at the start of the clip are replicated edge frames (x_{−1} = x_{−2} = x_0);
   - TCA (:class:`TemporalChannelAttention`): per-frame GAP, first- and second-order temporal differences
     d₁ = x_t − x_{t−1}, d₂ = (x_t − x_{t−2})/2 (circular in time), each through a shared MLP
     (1×1 conv d → 4d → d, ReLU, sigmoid), and the TSA output is scaled by (a₁ + a₂)/2;
   - temporal convolution of kernel k = T//2 + 1 over frames (circular padding (k−1)//2, weights zero at
     init), then ReLU(x_att + x);
3. covariance pooling (centred, divided by M), at the video level over all T·H·W positions of a clip
   (``level="video"``, the default) or per frame over H·W (``level="frame"``);
4. matrix square root by 3 coupled Newton–Schulz iterations (iSQRT-COV), pre-normalized by tr(Σ) + 1e-5 as
   TCP's copy of the iSQRT code (``ops/MPNCOV/MPNCOV.py``; the original fast-MPN-COV code divides by tr(Σ)),
   post-compensated by √tr(Σ);
5. upper-triangular vectorization: d(d+1)/2 values (8,256 at d = 128).

The classifier (dropout 0.5 → FC) sits in :class:`polyzoo.video.models.VideoClassifier`; at the frame level
its per-frame scores are averaged over the T frames (TSN consensus).

Parameter counts (tested): the head alone 821,376 at T = 8 (reduce1 524,288; BN 512; reduce2 32,768; BN 256;
TSA 49,792; TCA 131,712; temporal conv 82,048) and 886,912 at T = 16.

Deviations from the official code
---------------------------------
- **Temporal-conv padding.** The official module picks the padding with the string test
  ``torch.__version__.split('.')[1] >= '5'``, which is False for torch 1.10–1.19, 2.0–2.4 and 2.10+; it then
  pads k−1 on both sides (circular) and the forward pass fails with a reshape error. Here the padding is always
  (k−1)//2, which keeps T frames whenever k = T//2 + 1 is odd (the paper's T = 8, 16: k = 5, 9). When k is
  even (e.g. T = 6, k = 4) one more frame is padded at the end so that the output still has T frames (tested).
- **Half precision.** The official ``Sqrtm`` backward divides by tr(Σ)² and its gradients overflow in float16
  once tr(Σ) reaches ~4e3. Here covariance and square root run in float32 with autocast disabled
  (``polyzoo.shared.ops``), and the gradient is plain autograd through the iteration.
- Covariance is computed by subtracting the mean, not by building the M×M centring matrix Î per sample
  (same Σ; M·d instead of M²·d work).
- ``TCP_1d`` as a ``Conv3d(d, d, (k, 1, 1))`` is kept (same parameters and key names), applied on
  (N, d, T, H, W).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.shared.ops import CovariancePool
from polyzoo.shared.ops.matrix import isqrt_newton_schulz

__all__ = ["TCPHead", "TemporalAttention", "TemporalChannelAttention", "TemporalSpatialAttention"]


def _split_clips(x: torch.Tensor, num_frames: int, name: str) -> tuple[int, int]:
    if x.dim() != 4:
        raise ValueError(f"{name}: expected frame features (N*T, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] % num_frames:
        raise ValueError(
            f"{name}: the batch of {x.shape[0]} frames is not a multiple of num_frames={num_frames} "
            "(expected N clips × T frames stacked as (N*T, C, H, W))"
        )
    return x.shape[0] // num_frames, num_frames


class TemporalSpatialAttention(nn.Module):
    """TSA (TCP §3.2, Eq. 4–5): spatial attention of frame t guided by the relation of frames t−1 and t−2.

    (N·T, C, H, W) → (N·T, C, H, W): x + BN(φ₀(x_t) · softmax(φ₋₁(x_{t−1})ᵀ φ₋₂(x_{t−2}) / √C)ᵀ), with the
    past frames edge-replicated at the start of each clip and BN's γ initialised to 0 (identity at init).
    """

    def __init__(self, dim: int, num_frames: int):
        super().__init__()
        self.dim, self.num_frames = dim, num_frames
        self.conv_phi0 = nn.Conv2d(dim, dim, 1)
        self.conv_phi_1 = nn.Conv2d(dim, dim, 1)
        self.conv_phi_2 = nn.Conv2d(dim, dim, 1)
        self.norm = nn.BatchNorm2d(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv_phi0, self.conv_phi_1, self.conv_phi_2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # c2_msra_fill
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = _split_clips(x, self.num_frames, "TemporalSpatialAttention")
        _, c, h, w = x.shape
        clips = x.view(n, t, c, h, w)
        # x_{t-1}, x_{t-2} with the first frame replicated at the start of the clip
        prev1 = torch.cat((clips[:, :1], clips[:, :-1]), dim=1)
        prev2 = torch.cat((prev1[:, :1], prev1[:, :-1]), dim=1)
        phi0 = self.conv_phi0(x).flatten(2)  # (N·T, C, HW)
        phi1 = self.conv_phi_1(prev1.reshape_as(x)).flatten(2)
        phi2 = self.conv_phi_2(prev2.reshape_as(x)).flatten(2)
        affinity = torch.softmax(torch.bmm(phi1.transpose(1, 2), phi2) * c**-0.5, dim=-1)  # (N·T, HW_a, HW_b)
        out = torch.bmm(phi0, affinity.transpose(1, 2)).view(x.shape)  # out[:, :, a] = Σ_b A[a, b] φ₀[:, b]
        return x + self.norm(out)


class TemporalChannelAttention(nn.Module):
    """TCA (TCP §3.2, Eq. 6): channel weights from first- and second-order temporal differences of the
    per-frame GAP features, through one shared MLP (C → 4C → C, ReLU, sigmoid); circular in time.

    ``forward(x, x_att)``: weights computed from ``x`` (N·T, C, H, W), applied to ``x_att`` of the same shape.
    """

    def __init__(self, dim: int, num_frames: int, expansion: int = 4):
        super().__init__()
        self.dim, self.num_frames = dim, num_frames
        self.g1 = nn.Conv2d(dim, dim * expansion, 1)
        self.g2 = nn.Conv2d(dim * expansion, dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.g1, self.g2):  # TCP_att_module.init_weights: N(0, 0.01), zero bias
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def _mlp(self, d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.g2(F.relu(self.g1(d))))

    def forward(self, x: torch.Tensor, x_att: torch.Tensor) -> torch.Tensor:
        n, t = _split_clips(x, self.num_frames, "TemporalChannelAttention")
        g = x.mean(dim=(2, 3), keepdim=True).view(n, t, self.dim, 1, 1)
        d1 = (g - g.roll(1, dims=1)).view(n * t, self.dim, 1, 1)  # x_t − x_{t−1}, circular
        d2 = ((g - g.roll(2, dims=1)) * 0.5).view(n * t, self.dim, 1, 1)  # (x_t − x_{t−2}) / 2, circular
        return x_att * (self._mlp(d1) + self._mlp(d2)) * 0.5


class TemporalAttention(nn.Module):
    """The TCP attention module: TSA → TCA → temporal convolution → ReLU(x_att + x).

    Args:
        dim: channels d of the reduced features.
        num_frames: frames T per clip.
        spatial, channel, temporal_conv: enable TSA, TCA and the temporal convolution (the official
            ``--TCP_sp``, ``--TCP_ch``, ``--TCP_1d``; all on by default). Without the temporal convolution the
            module returns x_att (no shortcut), as the official code.
    """

    def __init__(
        self, dim: int, num_frames: int, spatial: bool = True, channel: bool = True, temporal_conv: bool = True
    ):
        super().__init__()
        self.dim, self.num_frames = dim, num_frames
        self.kernel = num_frames // 2 + 1
        self.TSA = TemporalSpatialAttention(dim, num_frames) if spatial else None
        self.TCA = TemporalChannelAttention(dim, num_frames) if channel else None
        self.conv_1d = None
        if temporal_conv:
            # padding (k−1)//2 (not the official k−1, see the module docstring); weights zero at init
            self.conv_1d = nn.Conv3d(dim, dim, kernel_size=(self.kernel, 1, 1))
            nn.init.zeros_(self.conv_1d.weight)
            nn.init.zeros_(self.conv_1d.bias)

    def _temporal_conv(self, x: torch.Tensor, n: int) -> torch.Tensor:
        t, k = self.num_frames, self.kernel
        _, c, h, w = x.shape
        v = x.view(n, t, c, h, w).transpose(1, 2)  # (N, C, T, H, W)
        pad = (k - 1) // 2
        # circular padding of (k−1)//2 frames on both sides; an even kernel gets one more frame at the end
        v = F.pad(v, (0, 0, 0, 0, pad, pad + (k - 1) % 2), mode="circular")
        out = self.conv_1d(v)[:, :, :t]
        return out.transpose(1, 2).reshape(n * t, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _ = _split_clips(x, self.num_frames, "TemporalAttention")
        x_att = self.TSA(x) if self.TSA is not None else x
        if self.TCA is not None:
            x_att = self.TCA(x, x_att)
        if self.conv_1d is None:
            return x_att
        return F.relu(self._temporal_conv(x_att, n) + x)


class TCPHead(nn.Module):
    """Temporal-attentive covariance pooling: (N·T, C_in, H, W) frame features → (N, d(d+1)/2) at the video
    level, or (N, T, d(d+1)/2) at the frame level. Output is float32.

    Args:
        in_channels: C_in of the backbone's last stage (2048 for ResNet-50).
        num_frames: T, frames per clip (fixed: the attention and the temporal kernel depend on it).
        dim: d, the reduced dimension (``--TCP_dim``, 128).
        inner_dim: the first reduction's width (256 in the official code).
        level: "video" (covariance over all T·H·W positions of a clip) or "frame" (per frame over H·W).
        iters: Newton–Schulz iterations of the matrix square root (3).
        trace_eps: added to tr(Σ) before the square root (1e-5 as TCP's ``Sqrtm``; 0 for the original iSQRT-COV).
        spatial, channel, temporal_conv: the attention parts, see :class:`TemporalAttention`.
    """

    def __init__(
        self,
        in_channels: int = 2048,
        num_frames: int = 8,
        dim: int = 128,
        inner_dim: int = 256,
        level: Literal["video", "frame"] = "video",
        iters: int = 3,
        spatial: bool = True,
        channel: bool = True,
        temporal_conv: bool = True,
        trace_eps: float = 1e-5,
    ):
        super().__init__()
        if level not in ("video", "frame"):
            raise ValueError(f"TCPHead: level must be 'video' or 'frame', got {level!r}")
        if num_frames < 1:
            raise ValueError(f"TCPHead: num_frames must be >= 1, got {num_frames}")
        self.in_channels, self.num_frames, self.dim, self.level = in_channels, num_frames, dim, level
        self.layer_reduce1 = nn.Conv2d(in_channels, inner_dim, 1, bias=False)
        self.layer_reduce_bn1 = nn.BatchNorm2d(inner_dim)
        self.layer_reduce2 = nn.Conv2d(inner_dim, dim, 1, bias=False)
        self.layer_reduce_bn2 = nn.BatchNorm2d(dim)
        for conv in (self.layer_reduce1, self.layer_reduce2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.TCP_att = (
            TemporalAttention(dim, num_frames, spatial, channel, temporal_conv)
            if (spatial or channel or temporal_conv)
            else nn.Identity()
        )
        self.iters, self.trace_eps = iters, trace_eps
        sqrtm = partial(isqrt_newton_schulz, iters=iters, eps=trace_eps)
        self.pool = CovariancePool(normalization=sqrtm, iters=iters, vectorize=True)

    @property
    def out_features(self) -> int:
        """d(d+1)/2: the length of the pooled representation (8,256 at d = 128)."""
        return self.dim * (self.dim + 1) // 2

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """(N·T, C_in, H, W) → (N·T, d, H, W)."""
        x = F.relu(self.layer_reduce_bn1(self.layer_reduce1(x)))
        return F.relu(self.layer_reduce_bn2(self.layer_reduce2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TCPHead: expected frame features (N*T, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        n, t = _split_clips(x, self.num_frames, "TCPHead")
        x = self.TCP_att(self.reduce(x))
        _, d, h, w = x.shape
        if self.level == "video":
            # all T·H·W positions of a clip form one covariance (Eq. 7): (N, d, T·H·W)
            return self.pool(x.view(n, t, d, h * w).transpose(1, 2).reshape(n, d, t * h * w))
        return self.pool(x).view(n, t, -1)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_frames={self.num_frames}, dim={self.dim}, level={self.level}, "
            f"iters={self.iters}, trace_eps={self.trace_eps}"
        )

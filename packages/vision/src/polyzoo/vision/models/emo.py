"""EMO (Efficient MOdel) built from inverted residual mobile blocks (iRMB), as timm models ``emo_1m/2m/5m/6m``.

Paper: J. Zhang, X. Li, J. Li, L. Liu, Z. Xue, B. Zhang, Z. Jiang, T. Huang, Y. Wang, C. Wang. "Rethinking
Mobile Block for Efficient Attention-based Models", ICCV 2023 (arXiv 2301.01146).
Official code: https://github.com/zhangzjn/EMO (``model/emo.py``, ``model/basic_modules.py``).

iRMB (paper Eq. 5–6, official ``iRMB``): x → norm → [EW-MHSA on x (``attn_pre=True``, every released variant),
then the 1×1 expansion v = act(W_v ·)] or just the expansion → x + SE(DW-conv-BN-SiLU(x)) (inner skip when
the block has a skip) → dropout → 1×1 projection → outer residual with DropPath.

Expanded-window attention: the map is zero-padded on the bottom/right to a multiple of ``window_size`` and
split as the official ``rearrange('b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1')`` does, i.e. each window takes
every n-th row and column (n = number of windows along that axis): a strided grid, not a contiguous block.
This is kept for parity with the released weights. The window size is a constructor argument (7 by default,
10/16 downstream; ``window_size <= 0`` attends globally), and inputs that do not divide are padded.

Module and parameter names follow the official code, so official state dicts load after the checkpoint filter
removes wrapper prefixes (``module.``; ``{"net": ...}``/``{"state_dict": ...}`` containers). The pretrained
config of each variant (tag ``official_in1k``) names its released file (``OFFICIAL_RELEASES``, e.g.
``resources/EMO_1M/net.pth`` of the official repository) without a URL; with the file at hand,
``timm.create_model("emo_1m", pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` loads it through
the filter.

Deviations from the official code: ``forward`` returns a logits tensor (the official one returns
``{'out': x, 'out_kd': x}``); the final norm is part of ``forward_features`` (timm convention); the value
projection after attention is applied after un-windowing and cropping (it is pointwise, so the output is the
same without computing it on the padding); attention uses ``scaled_dot_product_attention`` (same math).

Counts (224², checked by the tests): parameters 1,361,168 / 2,377,472 / 5,108,848 / 6,168,496 and
0.2608 / 0.4394 / 0.9026 / 0.9608 GMACs as fvcore counts them (see :func:`polyzoo.vision.flops.count_macs`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

from polyzoo.vision.models._checkpoint import resolve_official_cfg, strip_prefixes

__all__ = ["EMO", "OFFICIAL_RELEASES", "EMOConfig", "LayerNorm2d", "MSPatchEmb", "emo_checkpoint_filter", "iRMB"]

# The released ImageNet-1k checkpoints: files in the official repository (README "Main results"), not fetched here.
OFFICIAL_RELEASES: dict[str, str] = {
    "emo_1m": "resources/EMO_1M/net.pth",
    "emo_2m": "resources/EMO_2M/net.pth",
    "emo_5m": "resources/EMO_5M/net.pth",
    "emo_6m": "resources/EMO_6M/net.pth",
}
_SOURCE = "zhangzjn/EMO repository (README 'Main results'; polyzoo downloads nothing)"

_EPS = 1e-6


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of (B, C, H, W) maps (official ``LayerNorm2d``; weights at ``norm.*``)."""

    def __init__(self, channels: int, eps: float = _EPS):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn_2d":
        return nn.BatchNorm2d(channels, eps=_EPS)
    if kind == "ln_2d":
        return LayerNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"EMO: norm layer must be 'bn_2d', 'ln_2d' or 'none', got {kind!r}")


def _act(kind: str) -> nn.Module:
    acts = {"none": nn.Identity, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}
    if kind not in acts:
        raise ValueError(f"EMO: activation must be one of {sorted(acts)}, got {kind!r}")
    return acts[kind]()


class ConvNormAct(nn.Module):
    """Conv2d → norm → activation, padding ⌈(k − stride)/2⌉ as the official ``ConvNormAct``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: str = "bn_2d",
        act: str = "relu",
    ):
        super().__init__()
        padding = math.ceil((kernel_size - stride) / 2)
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        self.norm = _norm(norm, cout)
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class MSPatchEmb(nn.Module):
    """EMO stem: one 3×3 stride-2 conv with bias, BN, no activation (official ``MSPatchEmb`` with one dilation)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 2, norm: str = "bn_2d"):
        super().__init__()
        padding = math.ceil((kernel_size - stride) / 2)
        self.convs = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), _norm(norm, cout), nn.Identity())]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs[0](x)


class iRMB(nn.Module):
    """Inverted residual mobile block.

    Args:
        dim_in, dim_out: channels in and out.
        norm_in: normalise the input (False in the stem block).
        has_skip: residual connections (only used when dim_in == dim_out and stride == 1).
        exp_ratio: expansion λ of the 1×1 value projection (dim_mid = int(dim_in·λ)).
        norm, act: input norm ('bn_2d'/'ln_2d') and activation of the value projection ('silu', 'gelu', ...).
        v_proj: use the value projection (False: identity, needs λ = 1).
        dw_ks, stride: depthwise kernel and stride.
        se_ratio: squeeze-excitation ratio after the depthwise conv (0 = none).
        dim_head: attention head width (heads = dim_in // dim_head).
        window_size: attention window (≤ 0: global).
        attn_s: use expanded-window MHSA.
        qkv_bias: bias of the qk and v 1×1 convs.
        attn_drop, drop, drop_path: dropouts.
        attn_pre: attend on x before the value projection (True in all EMO variants).

    Shape: (B, dim_in, H, W) → (B, dim_out, H/stride, W/stride).
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        norm_in: bool = True,
        has_skip: bool = True,
        exp_ratio: float = 1.0,
        norm: str = "bn_2d",
        act: str = "relu",
        v_proj: bool = True,
        dw_ks: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        dim_head: int = 64,
        window_size: int = 7,
        attn_s: bool = True,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        attn_pre: bool = True,
    ):
        super().__init__()
        self.norm = _norm(norm, dim_in) if norm_in else nn.Identity()
        dim_mid = int(dim_in * exp_ratio)
        self.has_skip = dim_in == dim_out and stride == 1 and has_skip
        self.attn_s = attn_s
        self.attn_pre = attn_pre
        self.window_size = window_size
        if attn_s:
            if dim_in % dim_head:
                raise ValueError(f"iRMB: dim_in {dim_in} must be divisible by dim_head {dim_head}")
            self.dim_head = dim_head
            self.num_head = dim_in // dim_head
            self.scale = dim_head**-0.5
            self.qk = ConvNormAct(dim_in, dim_in * 2, 1, bias=qkv_bias, norm="none", act="none")
            self.v = ConvNormAct(dim_in, dim_mid, 1, bias=qkv_bias, norm="none", act=act)
            self.attn_drop = attn_drop
        elif v_proj:
            self.v = ConvNormAct(dim_in, dim_mid, 1, bias=qkv_bias, norm="none", act=act)
        else:
            if dim_mid != dim_in:
                raise ValueError(f"iRMB: v_proj=False needs exp_ratio 1, got {exp_ratio}")
            self.v = nn.Identity()
        self.conv_local = ConvNormAct(dim_mid, dim_mid, dw_ks, stride=stride, groups=dim_mid, norm="bn_2d", act="silu")
        self.se = (
            SqueezeExcite(dim_mid, rd_ratio=se_ratio, act_layer=type(_act(act))) if se_ratio > 0 else nn.Identity()
        )
        self.proj_drop = nn.Dropout(drop)
        self.proj = ConvNormAct(dim_mid, dim_out, 1, norm="none", act="none")
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Expanded-window MHSA on (B, C, H, W), returned at the input size (padding cropped)."""
        b, c, h, w = x.shape
        wh, ww = (h, w) if self.window_size <= 0 else (self.window_size, self.window_size)
        pad_b, pad_r = (-h) % wh, (-w) % ww
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        n1, n2 = (h + pad_b) // wh, (w + pad_r) // ww
        # 'b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1': window (i, j) holds rows i, i+n1, ... and columns j, j+n2, ...
        xw = x.view(b, c, wh, n1, ww, n2).permute(0, 3, 5, 1, 2, 4).reshape(b * n1 * n2, c, wh, ww)
        bw = xw.shape[0]
        qk = self.qk(xw).view(bw, 2, self.num_head, self.dim_head, wh * ww).transpose(-1, -2)  # (bw,2,h,N,d)
        if not self.attn_pre:
            raise NotImplementedError("iRMB: attn_pre=False (attention on the expanded values) is not implemented")
        xv = xw.view(bw, self.num_head, self.dim_head, wh * ww).transpose(-1, -2)  # (bw, heads, N, d)
        out = F.scaled_dot_product_attention(
            qk[:, 0], qk[:, 1], xv, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        out = out.transpose(-1, -2).reshape(b, n1, n2, c, wh, ww).permute(0, 3, 4, 1, 5, 2)
        out = out.reshape(b, c, wh * n1, ww * n2)
        return out[:, :, :h, :w] if (pad_b or pad_r) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        if self.attn_s:
            x = self._window_attention(x)
        x = self.v(x)
        x = x + self.se(self.conv_local(x)) if self.has_skip else self.se(self.conv_local(x))
        x = self.proj(self.proj_drop(x))
        return shortcut + self.drop_path(x) if self.has_skip else x


@dataclasses.dataclass
class EMOConfig:
    """Hyperparameters of an EMO variant (official factory arguments)."""

    depths: tuple[int, ...] = (2, 2, 8, 3)
    stem_dim: int = 24
    embed_dims: tuple[int, ...] = (32, 48, 80, 168)
    exp_ratios: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5)
    norm_layers: tuple[str, ...] = ("bn_2d", "bn_2d", "ln_2d", "ln_2d")
    act_layers: tuple[str, ...] = ("silu", "silu", "gelu", "gelu")
    dw_kss: tuple[int, ...] = (3, 3, 5, 5)
    dim_heads: tuple[int, ...] = (16, 16, 20, 21)
    attn_ss: tuple[bool, ...] = (False, False, True, True)
    qkv_bias: bool = True
    drop_path_rate: float = 0.04036


_VARIANTS: dict[str, EMOConfig] = {
    "emo_1m": EMOConfig(),
    "emo_2m": EMOConfig(
        depths=(3, 3, 9, 3), embed_dims=(32, 48, 120, 200), dim_heads=(16, 16, 20, 20), drop_path_rate=0.05
    ),
    "emo_5m": EMOConfig(
        depths=(3, 3, 9, 3),
        embed_dims=(48, 72, 160, 288),
        exp_ratios=(2.0, 3.0, 4.0, 4.0),
        dim_heads=(24, 24, 32, 32),
        drop_path_rate=0.05,
    ),
    "emo_6m": EMOConfig(
        depths=(3, 3, 9, 3),
        embed_dims=(48, 72, 160, 320),
        exp_ratios=(2.0, 3.0, 4.0, 5.0),
        dim_heads=(16, 24, 20, 32),
        drop_path_rate=0.05,
    ),
}


class EMO(nn.Module):
    """EMO network: stem (MSPatchEmb + depthwise iRMB with SE) → 4 stages of iRMBs (the first of each with
    stride 2, no skip, no attention, doubled expansion) → LayerNorm2d → global average pool → linear.

    Args:
        cfg: the variant's :class:`EMOConfig` (deep-copied).
        num_classes: classifier outputs (0: none).
        in_chans: input channels.
        window_size: attention window, one int for all stages or one per stage (≤ 0: global attention).
        drop_rate: dropout before the classifier; drop_path_rate: overrides the config's stochastic depth.
        attn_drop, drop: dropout in attention and before each block's projection.

    Shape: (B, in_chans, H, W) → (B, num_classes); stage outputs at strides 2, 4, 8, 16, 32.
    """

    def __init__(
        self,
        cfg: EMOConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        window_size: int | Sequence[int] = 7,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        global_pool: str = "avg",
        **kwargs: Any,
    ):
        super().__init__()
        cfg = dataclasses.replace(cfg or EMOConfig(), **kwargs)
        self.cfg = cfg
        windows = [window_size] * 4 if isinstance(window_size, int) else [int(w) for w in window_size]
        if len(windows) != 4:
            raise ValueError(f"EMO: window_size must be an int or 4 ints (one per stage), got {window_size!r}")
        if global_pool != "avg":
            raise ValueError(f"EMO supports global_pool='avg' only, got {global_pool!r}")
        self.window_size = windows
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        dpr_max = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
        n_blocks = sum(cfg.depths)
        dprs = [dpr_max * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # linear, as torch.linspace
        common = dict(qkv_bias=cfg.qkv_bias, attn_drop=attn_drop, drop=drop, attn_pre=True)
        self.stage0 = nn.Sequential(
            MSPatchEmb(in_chans, cfg.stem_dim, kernel_size=cfg.dw_kss[0], stride=2, norm=cfg.norm_layers[0]),
            iRMB(
                cfg.stem_dim,
                cfg.stem_dim,
                norm_in=False,
                has_skip=False,
                exp_ratio=1,
                norm=cfg.norm_layers[0],
                act=cfg.act_layers[0],
                v_proj=False,
                dw_ks=cfg.dw_kss[0],
                se_ratio=1,
                dim_head=cfg.dim_heads[0],
                window_size=windows[0],
                attn_s=False,
                **common,
            ),
        )
        self.feature_info = [dict(num_chs=cfg.stem_dim, reduction=2, module="stage0")]
        dim_prev, block_idx = cfg.stem_dim, 0
        for i, depth in enumerate(cfg.depths):
            blocks = []
            for j in range(depth):
                first = j == 0
                blocks.append(
                    iRMB(
                        dim_prev,
                        cfg.embed_dims[i],
                        norm_in=True,
                        has_skip=not first,
                        exp_ratio=cfg.exp_ratios[i] * 2 if first else cfg.exp_ratios[i],
                        norm=cfg.norm_layers[i],
                        act=cfg.act_layers[i],
                        v_proj=True,
                        dw_ks=cfg.dw_kss[i],
                        stride=2 if first else 1,
                        se_ratio=0.0,
                        dim_head=cfg.dim_heads[i],
                        window_size=windows[i],
                        attn_s=False if first else cfg.attn_ss[i],
                        drop_path=dprs[block_idx],
                        **common,
                    )
                )
                dim_prev = cfg.embed_dims[i]
                block_idx += 1
            self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=dim_prev, reduction=2 ** (i + 2), module=f"stage{i + 1}"))
        self.norm = _norm(cfg.norm_layers[-1], dim_prev)
        self.num_features = self.head_hidden_size = dim_prev
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim_prev, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm | nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"stage{i}") for i in range(5)]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stage0", blocks=r"^stage(\d+)" if coarse else r"^stage(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"alpha", "gamma", "beta"}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes=0``: none; ``forward`` then returns pooled features)."""
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"EMO supports global_pool 'avg' only, got {global_pool!r}")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → normalised last-stage map (B, C4, H/32, W/32)."""
        for stage in self.stages:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                from timm.models import checkpoint_seq

                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C4, h, w) → pooled (B, C4) when ``pre_logits``, else logits (B, num_classes)."""
        x = self.head_drop(x.mean((2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load our own state dicts or official EMO ones (see :func:`emo_checkpoint_filter`)."""
        return super().load_state_dict(emo_checkpoint_filter(state_dict, self), strict=strict, assign=assign)


def emo_checkpoint_filter(state_dict: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """Official EMO state dicts (``{"net": ...}``/``{"state_dict": ...}`` containers, ``module.`` prefix) onto ours.

    The official key names equal ours; the official ``pre_head`` is an identity for the released variants."""
    return {k: v for k, v in strip_prefixes(state_dict).items() if not k.startswith("pre_head.")}


def _create_emo(variant: str, pretrained: bool = False, **kwargs: Any) -> EMO:
    if pretrained:
        resolve_official_cfg(variant, kwargs, f"{OFFICIAL_RELEASES[variant]} ({_SOURCE})")
    cfg = dataclasses.replace(_VARIANTS[variant])
    return build_model_with_cfg(
        EMO,
        variant,
        pretrained,
        cfg=cfg,
        pretrained_filter_fn=emo_checkpoint_filter,
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stage0.0.convs.0.0",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        f"{name}.official_in1k": _cfg(
            description=f"official ImageNet-1k weights {OFFICIAL_RELEASES[name]}",
            notes=(f"file: {OFFICIAL_RELEASES[name]}", f"source: {_SOURCE}"),
            origin_url="https://github.com/zhangzjn/EMO",
            paper_ids="arXiv:2301.01146",
        )
        for name in _VARIANTS
    }
)


@register_model
def emo_1m(pretrained: bool = False, **kwargs: Any) -> EMO:
    """EMO-1M: 1,361,168 params, 0.2608 GMACs at 224², top-1 71.5."""
    return _create_emo("emo_1m", pretrained, **kwargs)


@register_model
def emo_2m(pretrained: bool = False, **kwargs: Any) -> EMO:
    """EMO-2M: 2,377,472 params, 0.4394 GMACs at 224², top-1 75.1."""
    return _create_emo("emo_2m", pretrained, **kwargs)


@register_model
def emo_5m(pretrained: bool = False, **kwargs: Any) -> EMO:
    """EMO-5M: 5,108,848 params, 0.9026 GMACs at 224², top-1 78.4."""
    return _create_emo("emo_5m", pretrained, **kwargs)


@register_model
def emo_6m(pretrained: bool = False, **kwargs: Any) -> EMO:
    """EMO-6M: 6,168,496 params, 0.9608 GMACs at 224², top-1 79.0."""
    return _create_emo("emo_6m", pretrained, **kwargs)

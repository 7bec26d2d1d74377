"""SoT: the second-order transformer head (MGCrP) for any timm ViT with a class token, and ``sot_tiny/small/base``.

Paper: J. Xie, R. Zeng, Q. Wang, Z. Zhou, P. Li. "SoT: Delving Deeper into Classification Head for
Transformer" (arXiv 2104.10935). Official code: https://github.com/jiangtaoxie/SoT (``sot_src/``).

MGCrP (multi-headed global cross-covariance pooling, paper §3.2): a bias-free linear map W_r (C → 2·h·d)
gives per head Q_h, K_h ∈ R^{N×d} from the word tokens; Σ_h = (1/N) Q̄_hᵀ K̄_h (d × d), where Q̄, K̄ are
centred as the official ``Covariance(remove_mean=True)`` does (see "Centring" below), computed by
:class:`polyzoo.shared.ops.pooling.CrossCovariancePool`; each Σ_h is power-normalised by svPN
(:func:`polyzoo.shared.ops.matrix.svpn`, α = ½, one power iteration from a learnable start vector shared by the
heads; algebraically Σ/√σ̂₁); the h·d² values are flattened (and dropped out for Small/Base).

Fusion with the class token (official ``Classifier``): ``sum_fc`` (default) logits = FC_v(MGCrP(word tokens))
+ FC_c(class token); ``concat``: FC(concat(class token, MGCrP(word tokens))); ``aggre_all``: FC(MGCrP(all
tokens)). ``forward_head(pre_logits=True)`` returns concat(class token, representation) for ``sum_fc``/``concat``
(the sum of two linear maps is one linear map of the concatenation) and the representation for ``aggre_all``.

``sot_tiny/small/base`` (official ``SoT_Tiny/Small/Base``): DenseNet-style token embedding (3×3 conv 3→64 with
bias, max-pool /2, three [DenseBlock(6 layers, bn_size 2, growth 16) → BN → 1×1 conv to 128 → avg-pool /2],
1×1 conv 128 → C with bias: 14×14 tokens at 224²), a class token, a fixed sinusoidal position embedding (a
frozen parameter, as in the official code, so it is in the parameter count), pre-norm ViT blocks (qkv without
bias, GELU MLP), a final LayerNorm, the MGCrP head. Parameter counts equal the official code's:
8,037,262 / 27,092,936 / 76,885,414.

Official defaults (an official checkpoint gives the official outputs; tested against a transcription of the
official model):

- Centring (``center``). The official ``Covariance(remove_mean=True)`` applies ``adaptive_avg_pool2d`` to the
  3-D (B·h, d, N) tensor, which subtracts one scalar per head and sample: the mean over all N·d entries. That
  is the default, ``center="scalar"``, for the paper models and for the MGCrP head on any timm ViT
  (:func:`sot_wrap`). ``center="dim"`` subtracts each dimension's mean over the tokens instead, i.e. the
  usual (per-dimension) cross-covariance: Σ is then invariant to per-dimension offsets of Q and K,
  whereas with scalar centring the token means q̄, k̄ (less their overall means m_q, m_k) stay in Σ as the
  rank-one term (q̄ − m_q·1)(k̄ − m_k·1)ᵀ, which can dominate σ̂₁ and hence the svPN scaling. Prefer "dim"
  when training a head from scratch rather than loading official weights; weights trained with one centring
  are not interchangeable with the other (no accuracy comparison is claimed here).
  ``center="none"`` skips the mean removal.
- LayerNorm: the official ViT blocks and the final norm are ``nn.LayerNorm`` (eps 1e-5), not timm's
  default (eps 1e-6): the blocks are built with ``norm_layer=nn.LayerNorm``.

Deviations from the official code, and why:
- configurations are dataclasses copied per model (the official factories mutate module-level dicts, so a
  second model in one process fails with ``KeyError: 'type'``);
- ``concat``/``aggre_all`` heads have no unused class-token FC (the official one creates it and never uses it);
- svPN runs in float32 for half-precision inputs (float64 stays float64) with autocast disabled, and returns the
  input's dtype (the official code allocates its buffers in the default dtype, so ``model.double()`` fails
  there); ``pretrained`` never downloads (the official README lists the weights as "coming soon": no release).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.densenet import DenseBlock
from timm.models.vision_transformer import Block
from torch import nn

from polyzoo.shared.ops.matrix import svpn
from polyzoo.shared.ops.pooling import CrossCovariancePool
from polyzoo.vision.models._checkpoint import resolve_official_cfg, strip_prefixes

__all__ = ["MGCrP", "SoT", "SoTConfig", "SoTHead", "SoTViT", "sot_checkpoint_filter", "sot_wrap"]

Fusion = Literal["sum_fc", "concat", "aggre_all"]
Center = Literal["dim", "scalar", "none"]


class SvPN(nn.Module):
    """svPN with a learnable power-iteration start vector ``weight`` (d,), shared across heads (official ``svPN``).

    Shape: (B, d, d) → (B, d, d).
    """

    def __init__(self, dim: int, alpha: float = 0.5, iters: int = 1):
        super().__init__()
        self.alpha, self.iters = alpha, iters
        self.weight = nn.Parameter(torch.randn(dim))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        work = a.dtype if a.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(device_type=a.device.type, enabled=False):
            out = svpn(a.to(work), alpha=self.alpha, iters=self.iters, v0=self.weight.to(work))
        return out.to(a.dtype)


class MGCrP(nn.Module):
    """Multi-headed global cross-covariance pooling.

    Args:
        dim: token width C.
        num_heads: heads h.
        wr_dim: per-head projection width d (output h·d² values).
        center: mean removal of Q and K: "scalar" (official, default), "dim" or "none" (see the module docstring).
        alpha, iters: svPN power and power iterations.
        dropout: dropout on the flattened representation.

    Shape: (B, N, C) → (B, h·d²).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 6,
        wr_dim: int = 14,
        center: Center = "scalar",
        alpha: float = 0.5,
        iters: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_heads, self.wr_dim = num_heads, wr_dim
        self.wr = nn.Linear(dim, 2 * num_heads * wr_dim, bias=False)
        self.pool = CrossCovariancePool(num_heads, normalization=None, center=center, flatten=False)
        self.norm = SvPN(wr_dim, alpha, iters)
        self.drop = nn.Dropout(dropout)
        self.output_dim = num_heads * wr_dim * wr_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"MGCrP: expected tokens (B, N, C), got shape {tuple(x.shape)}")
        b = x.shape[0]
        q, k = self.wr(x).chunk(2, dim=-1)  # each (B, N, h·d), head-major as the official reshape
        sigma = self.pool(q, k)  # (B, h, d, d)
        sigma = self.norm(sigma.reshape(b * self.num_heads, self.wr_dim, self.wr_dim))
        return self.drop(sigma.reshape(b, -1))


class SoTHead(nn.Module):
    """Classification head fusing the class token with MGCrP of the word tokens.

    Args:
        in_dim: token width C.
        num_classes: outputs (0: ``forward`` returns the pre-logits features).
        fusion: "sum_fc", "concat" or "aggre_all".
        num_prefix_tokens: tokens before the word tokens (class token first; e.g. 2 with a distillation token).
        num_heads, wr_dim, center, dropout: of :class:`MGCrP`.

    Shape: tokens (B, N, C) → logits (B, num_classes).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int = 1000,
        fusion: Fusion = "sum_fc",
        num_prefix_tokens: int = 1,
        num_heads: int = 6,
        wr_dim: int = 14,
        center: Center = "scalar",
        dropout: float = 0.0,
    ):
        super().__init__()
        if fusion not in ("sum_fc", "concat", "aggre_all"):
            raise ValueError(f"SoTHead: fusion must be 'sum_fc', 'concat' or 'aggre_all', got {fusion!r}")
        if num_prefix_tokens < 1:
            raise ValueError("SoTHead: the backbone needs a class token (num_prefix_tokens >= 1)")
        self.fusion, self.in_dim, self.num_prefix_tokens = fusion, in_dim, num_prefix_tokens
        self.representation = MGCrP(in_dim, num_heads, wr_dim, center=center, dropout=dropout)
        rep = self.representation.output_dim
        self.pre_logits_dim = rep if fusion == "aggre_all" else in_dim + rep
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        """New classifier weights for ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        rep = self.representation.output_dim
        if num_classes <= 0:
            self.visual_fc, self.cls_fc = nn.Identity(), None
        elif self.fusion == "sum_fc":
            self.visual_fc, self.cls_fc = nn.Linear(rep, num_classes), nn.Linear(self.in_dim, num_classes)
        else:
            self.visual_fc, self.cls_fc = nn.Linear(self.pre_logits_dim, num_classes), None
        for m in (self.visual_fc, self.cls_fc):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls_token = x[:, 0]
        if self.fusion == "aggre_all":
            feats = self.representation(x)
            return feats if pre_logits or self.num_classes <= 0 else self.visual_fc(feats)
        rep = self.representation(x[:, self.num_prefix_tokens :])
        if pre_logits or self.num_classes <= 0:
            return torch.cat([cls_token, rep], dim=1)
        if self.fusion == "concat":
            return self.visual_fc(torch.cat([cls_token, rep], dim=1))
        return self.visual_fc(rep) + self.cls_fc(cls_token)


class SoTViT(nn.Module):
    """Any timm ViT-family model with a class token, its classifier replaced by :class:`SoTHead`.

    Args:
        backbone: a timm model whose ``forward_features`` returns tokens (B, N, C) with the class token first
            (e.g. ``deit_small_patch16_224``); its own classifier is removed.
        num_classes: outputs.
        **head_kwargs: of :class:`SoTHead` (fusion, num_heads, wr_dim, center, dropout).
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 1000, **head_kwargs: Any):
        super().__init__()
        prefix = getattr(backbone, "num_prefix_tokens", 0)
        if getattr(backbone, "cls_token", None) is None or prefix < 1:
            raise ValueError(
                f"SoTViT: {type(backbone).__name__} has no class token (cls_token/num_prefix_tokens); "
                "SoT fuses the class token with MGCrP of the word tokens"
            )
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_features = backbone.num_features
        self.head = SoTHead(backbone.num_features, num_classes, num_prefix_tokens=prefix, **head_kwargs)
        self.head_hidden_size = self.head.pre_logits_dim
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        if cfg.get("first_conv"):
            cfg["first_conv"] = f"backbone.{cfg['first_conv']}"
        self.pretrained_cfg = {**cfg, "classifier": "head.visual_fc", "url": "", "hf_hub_id": None}
        self.feature_info = getattr(backbone, "feature_info", [])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        nwd = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {f"backbone.{n}" for n in nwd}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → tokens (B, N, C) after the backbone's final norm."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def sot_wrap(backbone: str | nn.Module, num_classes: int = 1000, **kwargs: Any) -> SoTViT:
    """An SoT model from a timm ViT name (created with ``num_classes``' head removed) or module.

    ``kwargs`` go to :class:`SoTHead` (``fusion``, ``num_heads``, ``wr_dim``, ``center``, ``dropout``; the
    defaults are the official head's: ``sum_fc``, 6 heads, scalar centring, svPN α = ½ with one power
    iteration) and, for a name, the rest to ``timm.create_model`` (``img_size``, ``drop_path_rate``, ...)."""
    head_keys = {"fusion", "num_heads", "wr_dim", "center", "dropout"}
    head_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in head_keys}
    if isinstance(backbone, str):
        import timm

        backbone = timm.create_model(backbone, num_classes=0, **kwargs)
    elif kwargs:
        raise ValueError(f"sot_wrap: unexpected arguments for a module backbone: {sorted(kwargs)}")
    return SoTViT(backbone, num_classes=num_classes, **head_kwargs)


def sinusoid_position_embedding(n_position: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal table (1, n_position, dim): sin on even, cos on odd channels, period 10000^(2i/dim)."""
    pos = torch.arange(n_position, dtype=torch.float64).unsqueeze(1)
    idx = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(idx, 2, rounding_mode="floor") / dim)
    table = torch.where(idx.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


class _DenseTransition(nn.Sequential):
    """BN → 1×1 conv → 2×2 average pool (the official transition: no ReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseTokenEmbed(nn.Module):
    """SoT's DenseNet-style token embedding: (B, 3, H, W) → (B, (H/16)·(W/16), C)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 384, token_dim: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, token_dim, 3, 1, 1),
            nn.MaxPool2d(3, 2, 1),
        )
        stage: list[nn.Module] = []
        cin = token_dim
        for _ in range(3):
            stage.append(DenseBlock(num_layers=6, num_input_features=cin, bn_size=2, growth_rate=16))
            stage.append(_DenseTransition(cin + 6 * 16, 128))
            cin = 128
        self.stage = nn.Sequential(*stage)
        self.transition = nn.Conv2d(128, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transition(self.stage(self.stem(x))).flatten(2).transpose(1, 2)


class _TokenWrapper(nn.Module):
    """Holds the embedding at ``tokens`` (official key path ``visual_tokens.tokens.*``)."""

    def __init__(self, tokens: nn.Module):
        super().__init__()
        self.tokens = tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)


@dataclasses.dataclass
class SoTConfig:
    """Hyperparameters of an SoT variant."""

    embed_dim: int = 240
    depth: int = 12
    num_heads: int = 4
    mlp_ratio: float = 2.5
    head_heads: int = 6
    wr_dim: int = 14
    head_dropout: float = 0.0


_VARIANTS: dict[str, SoTConfig] = {
    "sot_tiny": SoTConfig(),
    "sot_small": SoTConfig(384, 14, 6, 3.5, 6, 24, 0.5),
    "sot_base": SoTConfig(528, 24, 8, 3.0, 6, 38, 0.7),
}


class SoT(nn.Module):
    """SoT-Tiny/Small/Base: dense token embedding, class token, sinusoidal positions, pre-norm ViT blocks,
    final LayerNorm, :class:`SoTHead`.

    Args:
        cfg: the variant's :class:`SoTConfig` (copied).
        num_classes, in_chans: as usual.
        img_size: input side (a multiple of 16; 224 gives 196 tokens).
        drop_rate, drop_path_rate, attn_drop_rate: dropout, stochastic depth (linear), attention dropout.
        fusion, center: of the head (``center="scalar"``, the official centring, by default).

    Shape: (B, in_chans, img_size, img_size) → (B, num_classes).
    """

    def __init__(
        self,
        cfg: SoTConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        fusion: Fusion = "sum_fc",
        center: Center = "scalar",
        global_pool: str = "token",
        **kwargs: Any,
    ):
        super().__init__()
        cfg = dataclasses.replace(cfg or SoTConfig(), **kwargs)
        if isinstance(img_size, tuple | list):
            if img_size[0] != img_size[1]:
                raise ValueError(f"SoT: square inputs only, got img_size={img_size}")
            img_size = img_size[0]
        if img_size % 16:
            raise ValueError(f"SoT: img_size must be a multiple of 16 (tokens at stride 16), got {img_size}")
        self.cfg, self.img_size, self.num_classes = cfg, img_size, num_classes
        self.num_features = self.embed_dim = cfg.embed_dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        self.visual_tokens = _TokenWrapper(DenseTokenEmbed(in_chans, cfg.embed_dim))
        num_patches = (img_size // 16) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(sinusoid_position_embedding(num_patches + 1, cfg.embed_dim), requires_grad=False)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.Sequential(
            *[
                Block(
                    cfg.embed_dim,
                    cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    qkv_bias=False,
                    proj_drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[i],
                    norm_layer=nn.LayerNorm,  # the official blocks' nn.LayerNorm (eps 1e-5), not timm's eps 1e-6
                )
                for i in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.classifier = SoTHead(
            cfg.embed_dim,
            num_classes,
            fusion=fusion,
            num_heads=cfg.head_heads,
            wr_dim=cfg.wr_dim,
            center=center,
            dropout=cfg.head_dropout,
        )
        self.head_hidden_size = self.classifier.pre_logits_dim
        self.feature_info = [dict(num_chs=cfg.embed_dim, reduction=16, module=f"blocks.{i}") for i in range(cfg.depth)]
        self.apply(self._init_weights)
        trunc_normal_(self.cls_token, std=0.02)
        self.classifier.reset(num_classes)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.zeros_(m.bias)
            nn.init.ones_(m.weight)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^cls_token|pos_embed|visual_tokens", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier.reset(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → normalised tokens (B, 1 + N, C), class token first."""
        x = self.visual_tokens(x)
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"SoT: {x.shape[1]} tokens but the position embedding has {self.pos_embed.shape[1] - 1} "
                f"(built for img_size={self.img_size}); pass img_size= to match the input"
            )
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models import checkpoint_seq

            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, C) → logits (B, num_classes), or the fused features when ``pre_logits``."""
        return self.classifier(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load our own state dicts or the official SoT layout (see :func:`sot_checkpoint_filter`)."""
        return super().load_state_dict(sot_checkpoint_filter(state_dict, self), strict=strict, assign=assign)


def sot_checkpoint_filter(state_dict: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """Official SoT state dicts onto :class:`SoT`: unwrap/strip ``module.``; the official keys match ours
    (``visual_tokens.tokens.*``, ``blocks.N.*`` as timm ``Block``, ``classifier.representation.{wr,norm.weight}``,
    ``classifier.{visual_fc,cls_fc}``), except the official head's unused ``cls_fc`` for non-``sum_fc`` fusions,
    which is dropped, and a position embedding of another length, which is rebuilt (it is a fixed table)."""
    sd = strip_prefixes(state_dict)
    if model is not None:
        own = model.state_dict()
        if "classifier.cls_fc.weight" not in own:
            sd = {k: v for k, v in sd.items() if not k.startswith("classifier.cls_fc.")}
        if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
            sd["pos_embed"] = own["pos_embed"]
    return sd


def _create_sot(variant: str, pretrained: bool = False, **kwargs: Any) -> SoT:
    if pretrained:
        resolve_official_cfg(
            variant, kwargs, "weights (none are released: the official README lists them as coming soon)"
        )
    return build_model_with_cfg(
        SoT,
        variant,
        pretrained,
        cfg=dataclasses.replace(_VARIANTS[variant]),
        pretrained_filter_fn=sot_checkpoint_filter,
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "visual_tokens.tokens.stem.0",
        "classifier": "classifier.visual_fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "sot_tiny.untrained": _cfg(),
        "sot_small.untrained": _cfg(),
        "sot_base.untrained": _cfg(),
        "sot_deit_tiny_patch16_224.untrained": _cfg(
            first_conv="backbone.patch_embed.proj", classifier="head.visual_fc"
        ),
        "sot_deit_small_patch16_224.untrained": _cfg(
            first_conv="backbone.patch_embed.proj", classifier="head.visual_fc"
        ),
    }
)


@register_model
def sot_tiny(pretrained: bool = False, **kwargs: Any) -> SoT:
    """SoT-Tiny: 8,037,262 params (official code), 2.55 GMACs, top-1 80.3."""
    return _create_sot("sot_tiny", pretrained, **kwargs)


@register_model
def sot_small(pretrained: bool = False, **kwargs: Any) -> SoT:
    """SoT-Small: 27,092,936 params (official code), 5.82 GMACs, top-1 82.7."""
    return _create_sot("sot_small", pretrained, **kwargs)


@register_model
def sot_base(pretrained: bool = False, **kwargs: Any) -> SoT:
    """SoT-Base: 76,885,414 params (official code), 14.57 GMACs, top-1 83.5."""
    return _create_sot("sot_base", pretrained, **kwargs)


def _create_sot_vit(backbone: str, pretrained: bool, wr_dim: int, **kwargs: Any) -> SoTViT:
    if pretrained:
        raise ValueError("SoT plug-in models have no released weights; use checkpoint_path= with your own")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.setdefault("wr_dim", wr_dim)
    num_classes = kwargs.pop("num_classes", 1000)
    return sot_wrap(backbone, num_classes=num_classes, **kwargs)


@register_model
def sot_deit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> SoTViT:
    """DeiT-Tiny with the SoT head (paper: 72.2 → 78.6 top-1)."""
    return _create_sot_vit("deit_tiny_patch16_224", pretrained, 14, **kwargs)


@register_model
def sot_deit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> SoTViT:
    """DeiT-Small with the SoT head (paper: 79.8 → 82.7 top-1)."""
    return _create_sot_vit("deit_small_patch16_224", pretrained, 24, **kwargs)

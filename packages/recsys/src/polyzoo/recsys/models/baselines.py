"""CTR baselines on the same feature pipeline as xDeepInt: logistic regression, FM, DeepFM, DCN / DCN-v2 and
xDeepFM (CIN). Every model maps global row ids ``(B, m)`` (:class:`polyzoo.recsys.features.FeatureMap`) to
logits ``(B,)`` and exposes :meth:`embedding_parameters` / :meth:`dense_parameters`.

Papers and the reference implementations read for understanding (DeepCTR-Torch 0.3.0 models of the same names):

* FM: Rendle, "Factorization Machines", ICDM 2010 — ``0.5 Σ_d ((Σ_i v_id)² − Σ_i v_id²)``.
* DeepFM: Guo et al., IJCAI 2017 — FM and a DNN sharing the embeddings, logits summed.
* DCN: Wang et al., ADKDD 2017 — ``x_{l+1} = x0 x_lᵀ w_l + b_l + x_l``; DCN-v2: Wang et al., WWW 2021 —
  ``x_{l+1} = x0 ∘ (W_l x_l + b_l) + x_l``; cross and deep towers in parallel, concatenated, linear output.
* xDeepFM: Lian et al., KDD 2018 — CIN ``X^k_h = Σ_{i,j} W^{k,h}_{ij} (X^{k-1}_i ∘ X^0_j)``, sum pooling over D,
  plus a linear part and a DNN. ``split_half`` (DeepCTR's default) feeds half of each hidden layer forward and
  the other half to the output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from polyzoo.recsys.models.embedding import FieldEmbedding

__all__ = ["CIN", "DCN", "FM", "MLP", "BaselineConfig", "DeepFM", "LogisticRegression", "XDeepFM"]


@dataclasses.dataclass
class BaselineConfig:
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    cross_layers: int = 3  # DCN
    dcn_variant: str = "v2"  # "v1" (vector cross) or "v2" (matrix cross)
    cin_layers: tuple[int, ...] = (128, 128)  # xDeepFM
    cin_split_half: bool = True
    sparse_embedding: bool = False
    field_widths: tuple[int, ...] = ()  # id columns per field (L > 1: a multi-hot bag, mean combiner); () = all 1


def _widths(field_widths: Sequence[int], num_fields: int) -> list[int] | None:
    if not field_widths:
        return None
    if len(field_widths) != num_fields:
        raise ValueError(f"field_widths has {len(field_widths)} entries for {num_fields} fields")
    return list(field_widths)


class MLP(nn.Module):
    """``(B, in) -> (B, units[-1])``: Linear + ReLU (+ dropout) stack."""

    def __init__(self, in_features: int, units: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for out in units:
            layers += [nn.Linear(in_features, out), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = out
        self.net = nn.Sequential(*layers)
        self.out_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _CTRModel(nn.Module):
    """Shared pieces: a first-order term (one scalar per row + bias) and, when ``dim`` is set, field embeddings."""

    def __init__(
        self, num_rows: int, num_fields: int, dim: int | None, sparse: bool, field_widths: Sequence[int] = ()
    ) -> None:
        super().__init__()
        self.num_fields = num_fields
        widths = _widths(field_widths, num_fields)
        self.linear = FieldEmbedding(num_rows, 1, sparse=sparse, init_std=1e-4, field_widths=widths)
        self.bias = nn.Parameter(torch.zeros(()))
        self.embedding = FieldEmbedding(num_rows, dim, sparse=sparse, field_widths=widths) if dim is not None else None

    def first_order(self, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(ids).sum(dim=(1, 2)) + self.bias

    def embedding_parameters(self) -> list[nn.Parameter]:
        params = [self.linear.weight]
        if self.embedding is not None:
            params.append(self.embedding.weight)
        return params

    def dense_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]


class LogisticRegression(_CTRModel):
    """``logit = b + Σ_i w_{x_i}``: no interactions at all."""

    def __init__(self, num_rows: int, num_fields: int, config: BaselineConfig | None = None) -> None:
        cfg = config or BaselineConfig()
        super().__init__(num_rows, num_fields, None, cfg.sparse_embedding, cfg.field_widths)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.first_order(ids)


def fm_interaction(e: torch.Tensor) -> torch.Tensor:
    """``e (B, m, D) -> (B,)``: Σ_{i<j} <v_i, v_j> = 0.5 Σ_d ((Σ_i v_id)² − Σ_i v_id²)."""
    return 0.5 * (e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)).sum(dim=1)


class FM(_CTRModel):
    """Factorization machine: first order plus all pairwise inner products (second order only)."""

    def __init__(self, num_rows: int, num_fields: int, config: BaselineConfig | None = None) -> None:
        cfg = config or BaselineConfig()
        super().__init__(num_rows, num_fields, cfg.embedding_dim, cfg.sparse_embedding, cfg.field_widths)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.first_order(ids) + fm_interaction(self.embedding(ids))


class DeepFM(_CTRModel):
    """FM + DNN on the concatenated embeddings."""

    def __init__(self, num_rows: int, num_fields: int, config: BaselineConfig | None = None) -> None:
        cfg = config or BaselineConfig()
        super().__init__(num_rows, num_fields, cfg.embedding_dim, cfg.sparse_embedding, cfg.field_widths)
        self.dnn = MLP(num_fields * cfg.embedding_dim, cfg.hidden_units, cfg.dropout)
        self.dnn_out = nn.Linear(self.dnn.out_features, 1, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embedding(ids)
        deep = self.dnn_out(self.dnn(e.flatten(1))).squeeze(1)
        return self.first_order(ids) + fm_interaction(e) + deep


class DCN(_CTRModel):
    """Deep & Cross Network: cross tower (v1 vector or v2 matrix kernels) ∥ DNN, concatenated, linear output."""

    def __init__(self, num_rows: int, num_fields: int, config: BaselineConfig | None = None) -> None:
        cfg = config or BaselineConfig()
        super().__init__(num_rows, num_fields, cfg.embedding_dim, cfg.sparse_embedding, cfg.field_widths)
        if cfg.dcn_variant not in ("v1", "v2"):
            raise ValueError(f"dcn_variant must be 'v1' or 'v2', got {cfg.dcn_variant!r}")
        self.variant = cfg.dcn_variant
        width = num_fields * cfg.embedding_dim
        shape = (width, width) if self.variant == "v2" else (width, 1)
        self.cross_kernels = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(*shape))) for _ in range(cfg.cross_layers)
        )
        self.cross_bias = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(cfg.cross_layers))
        self.dnn = MLP(width, cfg.hidden_units, cfg.dropout) if cfg.hidden_units else None
        out_in = width + (self.dnn.out_features if self.dnn is not None else 0)
        self.out = nn.Linear(out_in, 1, bias=False)

    def cross(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0 (B, W) -> (B, W)`` after all cross layers."""
        x = x0
        for kernel, bias in zip(self.cross_kernels, self.cross_bias, strict=True):
            if self.variant == "v2":  # noqa: SIM108
                x = x0 * (x @ kernel.T + bias) + x  # x_{l+1} = x0 ∘ (W x_l + b) + x_l
            else:
                x = x0 * (x @ kernel) + bias + x  # x_{l+1} = x0 (x_lᵀ w) + b + x_l
        return x

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(ids).flatten(1)
        parts = [self.cross(x0)]
        if self.dnn is not None:
            parts.append(self.dnn(x0))
        return self.first_order(ids) + self.out(torch.cat(parts, dim=1)).squeeze(1)


class CIN(nn.Module):
    """Compressed Interaction Network. ``x0 (B, m, D) -> (B, Σ H_k')`` (sum-pooled feature maps)."""

    def __init__(self, num_fields: int, layer_sizes: Sequence[int], split_half: bool = True) -> None:
        super().__init__()
        self.split_half = split_half
        self.convs = nn.ModuleList()
        prev, out_dim = num_fields, 0
        for k, size in enumerate(layer_sizes):
            last = k == len(layer_sizes) - 1
            if split_half and not last and size % 2:
                raise ValueError(f"CIN layer size {size} must be even with split_half=True")
            self.convs.append(nn.Conv1d(prev * num_fields, size, kernel_size=1))
            prev = size // 2 if split_half and not last else size
            out_dim += prev
        self.out_features = out_dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        b, _m, d = x0.shape
        x, pooled = x0, []
        for k, conv in enumerate(self.convs):
            z = (x[:, :, None, :] * x0[:, None, :, :]).reshape(b, -1, d)  # (B, H_{k-1}·m, D)
            x = conv(z)  # X^k_h = Σ_ij W^{k,h}_ij (X^{k-1}_i ∘ X^0_j)  (B, H_k, D)
            if self.split_half and k < len(self.convs) - 1:
                x, direct = torch.split(x, x.shape[1] // 2, dim=1)
            else:
                direct = x
            pooled.append(direct.sum(dim=2))
        return torch.cat(pooled, dim=1)


class XDeepFM(_CTRModel):
    """xDeepFM: linear + CIN + DNN, logits summed."""

    def __init__(self, num_rows: int, num_fields: int, config: BaselineConfig | None = None) -> None:
        cfg = config or BaselineConfig()
        super().__init__(num_rows, num_fields, cfg.embedding_dim, cfg.sparse_embedding, cfg.field_widths)
        self.cin = CIN(num_fields, cfg.cin_layers, cfg.cin_split_half)
        self.cin_out = nn.Linear(self.cin.out_features, 1, bias=False)
        self.dnn = MLP(num_fields * cfg.embedding_dim, cfg.hidden_units, cfg.dropout) if cfg.hidden_units else None
        self.dnn_out = nn.Linear(self.dnn.out_features, 1, bias=False) if self.dnn is not None else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embedding(ids)
        logit = self.first_order(ids) + self.cin_out(self.cin(e)).squeeze(1)
        if self.dnn is not None:
            logit = logit + self.dnn_out(self.dnn(e.flatten(1))).squeeze(1)
        return logit

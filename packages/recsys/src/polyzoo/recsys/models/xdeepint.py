"""xDeepInt: the Polynomial Interaction Network (PIN) with subspace crossing.

Paper: Yachen Yan and Liubo Li, "xDeepInt: a Hybrid Architecture for Modeling the Vector-wise and Bit-wise
Feature Interactions", DLP-KDD 2020, arXiv 2301.01089.
Official code (TensorFlow 1): https://github.com/yanyachen/xDeepInt, ``xdeepint/src/nn.py``
(``VectorDense_Layer``, ``Polynomial_Block``, ``MultiHead_Polynomial_Block``, ``xDeepInt``).

The layer follows the official code exactly:

* **Subspace split.** Embeddings ``E (B, m, D)`` are split along D into h pieces of width D/h, concatenated on the
  field axis: ``X0 (B, m·h, D/h)``; row ``k·m + i`` is field i's k-th subspace. h = 1 is vector-wise, h = D
  bit-wise.
* **Layer l.** ``VectorDense``: a bias-free dense layer over the field-subspace axis, ``(W_l X0)[j, d] =
  Σ_i W_l[j, i] X0[i, d]``, W_l ∈ R^{mh×mh} shared across the D/h columns, then the activation f.
  ``residual=True``: ``X_l = X_{l-1} ∘ (1 + f(W_l X0))``; ``residual=False``: ``X_l = X_{l-1} ∘ f(W_l X0)`` and the
  block returns ``[X0, …, X_L]`` concatenated on the field axis. With linear f, X_L is a polynomial of degree
  L + 1 in X0.
* **Combine.** The output is split into h pieces on the field axis and concatenated on the embedding axis, giving
  back ``(B, m', D)``.
* **Readout.** ``VectorDense(units=1, bias=True)`` over the field axis then a sum over D:
  ``logit = Σ_d (Σ_r w_r Y[r, d] + b)``. There is no DNN tower.

Options beyond the official layer (defaults reproduce it):

* ``mix="previous"`` multiplies W into X_{l-1} instead of X0 (the reading where the layer's weights act on the
  previous layer, as a formula with W applied to X_{l-1} would have it; kept beside the official form and tested
  separately): ``X_l = X_{l-1} + f(W_l X_{l-1}) ∘ X0`` (residual) or ``X_l = f(W_l X_{l-1}) ∘ X0``; still degree
  L + 1. **The official code multiplies W into X0** (``mix="x0"``, the default).

Notes on fidelity:

* With ``residual=False`` the official combine splits the concatenation ``[X0 … X_L]`` (length (L+1)·m·h) into
  h consecutive pieces, so the readout weight of row r is shared by rows that come from different layers and
  subspaces. We reproduce that (the readout is still a linear function of every row); it only changes which rows
  share readout weights.
* The declared ``kernel_regularizer=l2(1.0)`` of the official code is never added to its loss; we have no L2 on
  the weights either (regularisation comes from the FTRL proximal terms, :mod:`polyzoo.recsys.optim`).
* Initialisation: Glorot-uniform kernels (``nn1.py``), zero bias, truncated-normal embeddings with std 1/√D
  (TF ``embedding_column`` default, as the official code leaves ``initializer=None`` for embeddings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from polyzoo.recsys.models.embedding import FieldEmbedding

__all__ = [
    "MultiHeadPolynomialBlock",
    "PolynomialBlock",
    "VectorDense",
    "XDeepInt",
    "XDeepIntConfig",
    "get_activation",
]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation by name: ``linear`` (the official setting), ``relu``, ``tanh``, ``sigmoid``."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class VectorDense(nn.Module):
    """Dense layer over the *field* axis, shared across the embedding columns (official ``VectorDense_Layer``).

    ``x (B, R, W) -> (B, units, W)`` with ``out[:, j, :] = Σ_i weight[j, i] x[:, i, :] (+ bias[j])``.
    """

    def __init__(self, in_rows: int, units: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(units, in_rows))
        self.bias = nn.Parameter(torch.zeros(units)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)  # Glorot uniform, fan_in = in_rows, fan_out = units
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(self.weight, x)  # (units, R) @ (B, R, W) -> (B, units, W)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out


def split_subspaces(x: torch.Tensor, h: int) -> torch.Tensor:
    """``(B, m, D) -> (B, m·h, D/h)``: split D into h pieces and stack them on the field axis (subspace-major)."""
    _b, _m, d = x.shape
    if d % h:
        raise ValueError(f"embedding size {d} is not divisible by num_subspaces={h}")
    return torch.cat(torch.split(x, d // h, dim=2), dim=1)


def combine_subspaces(x: torch.Tensor, h: int) -> torch.Tensor:
    """``(B, R, w) -> (B, R/h, w·h)``: split the field axis into h pieces, concatenate them on the last axis."""
    if x.shape[1] % h:
        raise ValueError(f"{x.shape[1]} rows cannot be split into num_subspaces={h} pieces")
    return torch.cat(torch.split(x, x.shape[1] // h, dim=1), dim=2)


class PolynomialBlock(nn.Module):
    """The Polynomial Interaction Network with subspace crossing (official ``Polynomial_Block``).

    Args:
        num_fields: m.
        embedding_dim: D (divisible by ``num_subspaces``).
        num_layers: L.
        num_subspaces: h (1 = vector-wise, D = bit-wise).
        activation: f, ``"linear"`` in the official experiment.
        residual: ``X_l = X_{l-1} ∘ (1 + f(W X0))`` if True, else ``X_{l-1} ∘ f(W X0)`` with all layers
            concatenated at the output.
        mix: ``"x0"`` (official: W acts on X0) or ``"previous"`` (W acts on X_{l-1}).
        dropout: optional dropout rate(s) before each layer's dense (official ``VectorDense`` dropout).

    Shapes: ``(B, m, D) -> (B, m', D)`` with ``m' = m`` (residual) or ``(L+1)·m`` (non-residual).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        num_layers: int,
        num_subspaces: int,
        activation: str = "linear",
        residual: bool = True,
        mix: str = "x0",
        dropout: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim % num_subspaces:
            raise ValueError(f"embedding_dim={embedding_dim} is not divisible by num_subspaces={num_subspaces}")
        if mix not in ("x0", "previous"):
            raise ValueError(f"mix must be 'x0' (official) or 'previous', got {mix!r}")
        self.num_fields, self.embedding_dim = num_fields, embedding_dim
        self.num_layers, self.num_subspaces = num_layers, num_subspaces
        self.residual, self.mix = residual, mix
        self.activation_name = activation
        self.activation = get_activation(activation)
        rows = num_fields * num_subspaces
        self.layers = nn.ModuleList(VectorDense(rows, rows, bias=False) for _ in range(num_layers))
        if dropout is None or isinstance(dropout, int | float):
            rates = [float(dropout or 0.0)] * num_layers
        else:
            rates = [float(r) for r in dropout]
            if len(rates) != num_layers:
                raise ValueError(f"dropout has {len(rates)} rates, expected num_layers={num_layers}")
        self.dropouts = nn.ModuleList(nn.Dropout(r) if r > 0 else nn.Identity() for r in rates)

    @property
    def output_fields(self) -> int:
        """m' of the output ``(B, m', D)``."""
        return self.num_fields if self.residual else (self.num_layers + 1) * self.num_fields

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``e (B, m, D) -> (B, m', D)``."""
        h = self.num_subspaces
        x0 = split_subspaces(e, h)  # (B, m·h, D/h)
        x = x0
        outputs = [x0]
        for dense, drop in zip(self.layers, self.dropouts, strict=True):
            if self.mix == "x0":
                weighted = self.activation(dense(drop(x0)))  # f(W_l X0)
                x = x * (1.0 + weighted) if self.residual else x * weighted
            else:
                weighted = self.activation(dense(drop(x)))  # f(W_l X_{l-1})
                x = x + weighted * x0 if self.residual else weighted * x0
            if not self.residual:
                outputs.append(x)
        out = x if self.residual else torch.cat(outputs, dim=1)
        return combine_subspaces(out, h)


class MultiHeadPolynomialBlock(nn.Module):
    """Official ``MultiHead_Polynomial_Block`` (defined but unused in the official experiment).

    A bias-free linear projection of every field's embedding to ``hidden_size``, split into ``num_heads`` pieces,
    one :class:`PolynomialBlock` per head (each with its own L, h, activation), outputs concatenated on the field
    axis. Shapes: ``(B, m, D) -> (B, Σ_k m'_k, hidden_size / num_heads)``.
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        hidden_size: int,
        num_heads: int,
        num_layers: Sequence[int],
        num_subspaces: Sequence[int],
        activation: Sequence[str] | None = None,
        residual: bool = True,
        mix: str = "x0",
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        if len(num_layers) != num_heads or len(num_subspaces) != num_heads:
            raise ValueError("num_layers and num_subspaces need one entry per head")
        activation = list(activation) if activation is not None else ["linear"] * num_heads
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.projection = nn.Linear(embedding_dim, hidden_size, bias=False)
        nn.init.xavier_uniform_(self.projection.weight)
        self.heads = nn.ModuleList(
            PolynomialBlock(num_fields, self.head_dim, num_layers[k], num_subspaces[k], activation[k], residual, mix)
            for k in range(num_heads)
        )

    @property
    def output_fields(self) -> int:
        return sum(head.output_fields for head in self.heads)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        projected = self.projection(e)  # (B, m, hidden)
        pieces = torch.split(projected, self.head_dim, dim=2)
        return torch.cat([head(p) for head, p in zip(self.heads, pieces, strict=True)], dim=1)


@dataclasses.dataclass
class XDeepIntConfig:
    """xDeepInt hyper-parameters; the defaults are the official Criteo experiment (``nn1.py``): L=4, h=16,
    linear activation, residual, no dropout, embedding 16."""

    embedding_dim: int = 16
    num_layers: int = 4
    num_subspaces: int = 16
    activation: str = "linear"
    residual: bool = True
    mix: str = "x0"
    dropout: float = 0.0
    sparse_embedding: bool = True
    field_widths: tuple[int, ...] = ()  # id columns per field (L > 1: a multi-hot bag, mean combiner); () = all 1
    # multi-head block (official, unused there): set num_heads > 0 to use it
    num_heads: int = 0
    hidden_size: int = 0
    head_layers: tuple[int, ...] = ()
    head_subspaces: tuple[int, ...] = ()


class XDeepInt(nn.Module):
    """Embedding → PIN (or its multi-head variant) → field readout summed over the embedding axis.

    ``ids (B, m) -> logits (B,)``. Parameter groups for the paper's combined optimisation:
    :meth:`embedding_parameters` (group-lasso FTRL) and :meth:`pin_parameters` (element-wise FTRL).
    """

    def __init__(self, num_rows: int, num_fields: int, config: XDeepIntConfig | None = None) -> None:
        super().__init__()
        cfg = dataclasses.replace(config) if config is not None else XDeepIntConfig()
        self.config = cfg
        self.num_fields = num_fields
        if cfg.field_widths and len(cfg.field_widths) != num_fields:
            raise ValueError(f"field_widths has {len(cfg.field_widths)} entries for {num_fields} fields")
        self.embedding = FieldEmbedding(
            num_rows, cfg.embedding_dim, sparse=cfg.sparse_embedding, field_widths=cfg.field_widths or None
        )
        if cfg.num_heads > 0:
            self.pin: nn.Module = MultiHeadPolynomialBlock(
                num_fields,
                cfg.embedding_dim,
                cfg.hidden_size,
                cfg.num_heads,
                cfg.head_layers,
                cfg.head_subspaces,
                residual=cfg.residual,
                mix=cfg.mix,
            )
        else:
            self.pin = PolynomialBlock(
                num_fields,
                cfg.embedding_dim,
                cfg.num_layers,
                cfg.num_subspaces,
                cfg.activation,
                cfg.residual,
                cfg.mix,
                cfg.dropout or None,
            )
        self.readout = VectorDense(self.pin.output_fields, 1, bias=True)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """``e (B, m, D) -> logits (B,)``: PIN, ``VectorDense(1, bias)``, sum over the embedding axis."""
        y = self.pin(e)  # (B, m', D')
        return self.readout(y).squeeze(1).sum(dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embedding(ids))

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.weight]

    def pin_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("embedding.")]

    def pin_weight_parameters(self) -> list[nn.Parameter]:
        """The interaction kernels W_l (for the zero-weight ratio of ``select``)."""
        return [p for name, p in self.pin.named_parameters() if name.endswith("weight")]

"""A documented synthetic CTR generator with planted second- and third-order interactions.

Rows have ``num_fields`` categorical fields, each uniform over ``cardinality`` values. The true logit is

    logit = b + Σ_i a_i[x_i]                                      (first order, every field but the last)
          + s2 · Σ_{(i,j) ∈ P2} u_ij[x_i] · v_ij[x_j]             (second order, pairs (0,1) and (2,3))
          + s3 · p[x_4] · q[x_5] · r[x_6]                         (third order, triple (4,5,6))

with every table drawn i.i.d. N(0, 1) from the generator seed, ``first_order_scale`` for a, ``s2``, ``s3``, and
the last field pure noise. The label is Bernoulli(σ(logit)). Logistic regression cannot represent either
interaction; FM represents the pairs (rank-1 in the values' latent factors) but not the triple; PIN with L ≥ 2
layers (degree ≥ 3), CIN and DNN-based models can represent both. The Bayes-optimal AUC (from the true logits)
is reported beside the models.

The file is written in a CSV format read by :func:`synthetic_format` (``label,f0,…``), through the same streaming
pipeline as Criteo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from polyzoo.recsys.data import CTRFormat
from polyzoo.recsys.features import FieldSpec
from polyzoo.shared.io import atomic_path

__all__ = ["SyntheticConfig", "generate_synthetic", "synthetic_format"]


@dataclasses.dataclass
class SyntheticConfig:
    num_fields: int = 8
    cardinality: int = 12
    rows: int = 60000
    bias: float = -0.5
    first_order_scale: float = 0.4
    s2: float = 1.0
    s3: float = 1.5
    pairs: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))
    triple: tuple[int, int, int] = (4, 5, 6)
    seed: int = 0


def synthetic_format(num_fields: int = 8) -> CTRFormat:
    """``label,f0,…,f{m-1}`` with a header; every field categorical, every value kept (threshold 0)."""
    fields = [FieldSpec(f"f{i}", "categorical", threshold=0) for i in range(num_fields)]
    return CTRFormat("synthetic", num_fields + 1, 0, fields, list(range(1, num_fields + 1)), delimiter=",", header=True)


def true_logits(x: np.ndarray, cfg: SyntheticConfig) -> np.ndarray:
    """``x (N, m)`` integer values -> the planted logits ``(N,)`` (tables drawn from ``cfg.seed``)."""
    rng = np.random.default_rng(cfg.seed + 1_000_003)
    m, c = cfg.num_fields, cfg.cardinality
    first = rng.normal(size=(m, c)) * cfg.first_order_scale
    first[m - 1] = 0.0  # the last field is noise
    logit = cfg.bias + first[np.arange(m), x].sum(axis=1)
    for i, j in cfg.pairs:
        u, v = rng.normal(size=c), rng.normal(size=c)
        logit += cfg.s2 * u[x[:, i]] * v[x[:, j]]
    p, q, r = rng.normal(size=(3, c))
    a, b, d = cfg.triple
    logit += cfg.s3 * p[x[:, a]] * q[x[:, b]] * r[x[:, d]]
    return logit


def generate_synthetic(path: str | Path, cfg: SyntheticConfig | None = None) -> np.ndarray:
    """Write ``cfg.rows`` rows to ``path`` (atomically); returns the true logits ``(rows,)`` in file order."""
    cfg = cfg or SyntheticConfig()
    if cfg.num_fields < 8:
        raise ValueError(
            f"the planted interactions use fields 0..6 and a noise field: num_fields >= 8, got {cfg.num_fields}"
        )
    rng = np.random.default_rng(cfg.seed)
    x = rng.integers(0, cfg.cardinality, size=(cfg.rows, cfg.num_fields))
    logit = true_logits(x, cfg)
    y = (rng.random(cfg.rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("label," + ",".join(f"f{i}" for i in range(cfg.num_fields)) + "\n")
        for row, label in zip(x, y, strict=True):
            fh.write(f"{label}," + ",".join(f"v{v}" for v in row) + "\n")
    return logit


def generate_criteo_file(
    path: str | Path,
    rows: int,
    seed: int = 0,
    cardinality: int = 10000,
    chunk: int = 100_000,
    distinct_chunks: int = 10,
) -> Path:
    """Write a raw-Criteo-format file (tab-separated ``label, I1..I13, C1..C26``, no header) of ``rows`` rows for
    benchmarks: integers log-normal with ~10% missing, categorical values 8-hex-digit tokens drawn Zipf-like from
    ``cardinality`` per field, ~5% missing. To write fast, ``distinct_chunks`` chunks of ``chunk`` rows are
    generated and repeated cyclically. Written atomically; returns ``path``."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(min(distinct_chunks, max(1, -(-rows // chunk)))):
        n = chunk
        labels = (rng.random(n) < 0.25).astype(np.int64)
        ints = np.floor(np.exp(rng.normal(1.5, 2.0, size=(n, 13)))).astype(np.int64)
        int_missing = rng.random((n, 13)) < 0.1
        ranks = np.minimum(rng.zipf(1.3, size=(n, 26)), cardinality) - 1
        cats = (ranks * 2654435761 + np.arange(26) * 40503) % (1 << 32)
        cat_missing = rng.random((n, 26)) < 0.05
        lines = []
        for i in range(n):
            iv = ["" if int_missing[i, j] else str(ints[i, j]) for j in range(13)]
            cv = ["" if cat_missing[i, j] else f"{cats[i, j]:08x}" for j in range(26)]
            lines.append("\t".join([str(labels[i]), *iv, *cv]))
        texts.append("\n".join(lines) + "\n")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        written, k = 0, 0
        while written < rows:
            text = texts[k % len(texts)]
            take = min(chunk, rows - written)
            if take < chunk:
                text = "".join(text.splitlines(keepends=True)[:take])
            fh.write(text)
            written += take
            k += 1
    return Path(path)

"""CTR models: xDeepInt (PIN) and the baselines, all mapping global row ids ``(B, m)`` to logits ``(B,)``."""

from polyzoo.recsys.models.baselines import CIN, DCN, FM, MLP, BaselineConfig, DeepFM, LogisticRegression, XDeepFM
from polyzoo.recsys.models.embedding import FieldEmbedding
from polyzoo.recsys.models.xdeepint import (
    MultiHeadPolynomialBlock,
    PolynomialBlock,
    VectorDense,
    XDeepInt,
    XDeepIntConfig,
)

__all__ = [
    "CIN",
    "DCN",
    "FM",
    "MLP",
    "BaselineConfig",
    "DeepFM",
    "FieldEmbedding",
    "LogisticRegression",
    "MultiHeadPolynomialBlock",
    "PolynomialBlock",
    "VectorDense",
    "XDeepFM",
    "XDeepInt",
    "XDeepIntConfig",
]

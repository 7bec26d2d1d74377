"""Math shared by several papers: matrix functions, pooling and attention.

Public API: ``polyzoo.shared.ops.matrix`` (``isqrt_newton_schulz``, ``sqrtm_eig``, ``svpn``, ``triu_vec``),
``polyzoo.shared.ops.pooling`` (``CovariancePool``, ``CrossCovariancePool``, ``GlobalAvgPool``) and
``polyzoo.shared.ops.attention`` (``ECA``, ``SqueezeExcite``).
"""

from polyzoo.shared.ops import attention, matrix, pooling
from polyzoo.shared.ops.attention import ECA, SqueezeExcite, eca_kernel_size
from polyzoo.shared.ops.matrix import isqrt_newton_schulz, sqrtm_eig, svpn, triu_vec
from polyzoo.shared.ops.pooling import CovariancePool, CrossCovariancePool, GlobalAvgPool

__all__ = [
    "ECA",
    "CovariancePool",
    "CrossCovariancePool",
    "GlobalAvgPool",
    "SqueezeExcite",
    "attention",
    "eca_kernel_size",
    "isqrt_newton_schulz",
    "matrix",
    "pooling",
    "sqrtm_eig",
    "svpn",
    "triu_vec",
]

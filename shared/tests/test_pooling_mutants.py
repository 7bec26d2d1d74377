"""Input checks of the pooling ops that the mutation run found untested: a (B, C, L) sequence is accepted by
``CovariancePool`` (its covariance over L), and ``cross_covariance`` refuses mismatched or wrongly ranked inputs."""

from __future__ import annotations

import pytest
import torch

from polyzoo.shared.ops.pooling import CovariancePool, cross_covariance


def test_covariance_pool_accepts_a_sequence_and_refuses_rank_two():
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    centred = x - x.mean(-1, keepdim=True)
    expected = centred @ centred.transpose(1, 2) / 7  # the biased covariance over the 7 positions
    out = CovariancePool(normalization=None, vectorize=False)(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="CovariancePool"):
        CovariancePool(normalization=None)(torch.zeros(2, 3))


@pytest.mark.parametrize(
    "q_shape,k_shape", [((2, 5, 3), (2, 4, 3)), ((2, 5, 3), (3, 5, 3)), ((5, 3), (2, 5, 3)), ((2, 5, 3), (5, 3))]
)
def test_cross_covariance_refuses_mismatched_inputs(q_shape, k_shape):
    with pytest.raises(ValueError, match="cross_covariance"):
        cross_covariance(torch.zeros(q_shape), torch.zeros(k_shape))

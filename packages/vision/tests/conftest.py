import pytest
import torch

import polyzoo.vision  # noqa: F401  (registers the models in timm)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield

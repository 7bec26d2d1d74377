import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def digits():
    from polyzoo.security.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def fashion_root():
    from polyzoo.security.data import default_fashion_mnist_root

    env = os.environ.get("POLYZOO_FASHION_MNIST")
    root = Path(env) if env else default_fashion_mnist_root()
    if root is None or not (root / "t10k-images-idx3-ubyte.gz").is_file():
        from polyzoo.shared.paths import missing_data

        missing_data(
            f"Fashion-MNIST absent at {root}: install Debian's dataset-fashion-mnist or set POLYZOO_FASHION_MNIST"
        )
    return root

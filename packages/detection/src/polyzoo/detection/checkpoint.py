"""Checkpoint loading for mmengine on torch >= 2.6 without turning ``weights_only`` off globally.

mmengine 0.10.7 calls ``torch.load(filename, map_location=...)`` without ``weights_only``. Since torch 2.6 that
means ``weights_only=True``, and mmengine's own checkpoints then fail on a few harmless non-tensor globals that
its ``message_hub`` and ``meta`` carry (``HistoryBuffer``, NumPy arrays and scalars, ``ConfigDict``).

Policy (see packages/detection/README.md):

* :func:`mmengine_safe_globals` keeps ``weights_only=True`` and only adds those data-only types to torch's
  allowlist, inside a ``with`` block. This loads mmengine checkpoints for testing, fine-tuning and resuming.
* :func:`trusted_full_unpickling` turns full unpickling on **only inside its block and only when asked**
  (``tools/train.py --resume PATH --trust-checkpoint``), for resuming a run's *own* checkpoint that holds
  other globals. Never use it on a file you downloaded.
* :func:`load_state_dict` reads weights (a plain state dict or an mmengine checkpoint's ``state_dict``)
  with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def safe_global_types() -> list:
    """The data-only globals of an mmengine checkpoint that we allow ``weights_only`` loading to build."""
    import numpy as np

    allowed: list = [np.ndarray, np.dtype]
    try:
        allowed.append(np.core.multiarray._reconstruct)
        allowed.append(np.core.multiarray.scalar)
    except AttributeError:  # pragma: no cover - numpy 2 moved them
        pass
    # the concrete dtype classes (numpy >= 1.25 pickles e.g. numpy.dtypes.Float64DType)
    for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool_"):
        allowed.append(type(np.dtype(getattr(np, name))))
    try:
        from mmengine.config import ConfigDict
        from mmengine.logging.history_buffer import HistoryBuffer

        allowed += [HistoryBuffer, ConfigDict, (_history_buffer_getattr, "builtins.getattr")]
    except ImportError:  # pragma: no cover - mmengine is a declared dependency
        pass
    return allowed


def _history_buffer_getattr(obj: object, name: str) -> object:
    """Stand-in for ``builtins.getattr`` while loading: HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, "mean")``; any other lookup is refused."""
    import pickle

    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in ("min", "max", "current", "mean"):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not allowed in a weights-only checkpoint")


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Within the block, ``torch.load(weights_only=True)`` accepts mmengine's data-only checkpoint globals."""
    with torch.serialization.safe_globals(safe_global_types()):
        yield


@contextlib.contextmanager
def trusted_full_unpickling(path: str | os.PathLike | None = None) -> Iterator[None]:
    """Allow full (arbitrary-code) unpickling for ``torch.load`` calls that do not pass ``weights_only``.

    Only for resuming a checkpoint this project wrote itself. The previous environment is restored on exit.
    """
    logger.warning(
        "full unpickling enabled for %s: only do this for a checkpoint your own run wrote", path or "this block"
    )
    previous = os.environ.get(_ENV)
    os.environ[_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = previous


def load_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read model weights with ``weights_only=True``.

    Accepts a plain ``{name: tensor}`` file or an mmengine checkpoint (``{"state_dict": ..., "meta": ...}``).
    Raises ``FileNotFoundError`` or ``ValueError`` naming the file when it is missing or holds no weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with mmengine_safe_globals():
        obj = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or a dict with 'state_dict'), got {type(obj)}")
    return obj

"""Safe file input/output: atomic writes, safe loading of PyTorch files, JSON with tensors split out.

Nothing here unpickles arbitrary objects: ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``,
which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "UnsafeCheckpointError",
    "atomic_dir",
    "atomic_path",
    "load_torch_file",
    "pack_tensors",
    "publish_dir",
    "read_json",
    "unpack_tensors",
    "write_json_atomic",
]


class UnsafeCheckpointError(ValueError):
    """A file asked to unpickle objects other than tensors and plain containers."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _user_mode(path: Path, base: int) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode an ordinary ``open`` or
    ``mkdir`` would have given it under the user's umask (outputs are shared like any other file)."""
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on POSIX), on
    error it is removed, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _user_mode(tmp_path, 0o666)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    _user_mode(tmp, 0o777)
    try:
        yield tmp
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(staged: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a completely written folder ``staged`` to ``path`` by renames (replacing an existing ``path``:
    it is moved aside first, so at every moment ``path`` is either the old or the new complete folder,
    or briefly absent, never partial)."""
    staged, path = Path(staged), Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(staged, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from e


def load_torch_file(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Any:
    """Load a ``.pt``/``.pth`` file without unpickling arbitrary objects (``weights_only=True``).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file contains objects other than tensors and plain containers (for
            example a class whose unpickling would run code). Convert such a file to a state dict (or
            safetensors) with code you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first_line = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain containers "
            f"({first_line}). polyzoo loads .pt/.pth files with weights_only=True only; re-save the weights "
            f"as a state dict or safetensors with code you trust."
        ) from e


# --- JSON + tensors: a lossless split of nested state (optimizer, scheduler, RNG) into JSON and tensors ---


def pack_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested state into a JSON-serializable structure and a flat dict of tensors (for safetensors).

    Tensors become ``{"__tensor__": key}``; tuples, non-string-keyed dicts and numpy arrays are tagged so that
    :func:`unpack_tensors` restores them exactly. Anything else that JSON cannot hold raises ``TypeError``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, key: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v, f"{key}.{k}") for k, v in x.items()}
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {key or '<root>'} in a JSON/safetensors checkpoint")

    return walk(obj, prefix), tensors


def unpack_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_tensors`."""
    if isinstance(obj, list):
        return [unpack_tensors(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__tuple__" in obj:
            return tuple(unpack_tensors(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: unpack_tensors(v, tensors) for k, v in obj["__dict__"]}
        return {k: unpack_tensors(v, tensors) for k, v in obj.items()}
    return obj

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
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # (torch is imported where it is used: atomic writes and JSON need no torch)
    import torch

__all__ = [
    "UnsafeCheckpointError",
    "atomic_dir",
    "atomic_path",
    "load_safetensors",
    "load_torch_file",
    "pack_tensors",
    "publish_dir",
    "read_json",
    "read_text",
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


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content; binary data or other encodings raise one ``ValueError`` naming the file and
    the offset (``open().read()`` would raise a ``UnicodeDecodeError`` that names no file)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder; expected a text file", str(path))
    data = path.read_bytes()
    nul = data.find(b"\x00", 0, 1 << 16)
    if nul >= 0:
        raise ValueError(f"{path}: binary data (a NUL byte at offset {nul}); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; malformed content raises one ``ValueError`` naming the file, line and column."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: empty file; expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from e


def load_torch_file(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Any:
    """Load a ``.pt``/``.pth`` file without unpickling arbitrary objects (``weights_only=True``, no retry).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file contains objects other than tensors and plain containers (for
            example a class whose unpickling would run code). Convert such a file to a state dict (or
            safetensors) with code you trust.
        ValueError: the file is empty, truncated or not a PyTorch file (the message names it).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file; expected a PyTorch checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        text = str(e).strip()
        if isinstance(e, RuntimeError) and "weights_only" not in text:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({_first_line(text)})") from e
        raise UnsafeCheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain containers "
            f"({_last_line(text)}). polyzoo loads .pt/.pth files with weights_only=True only; re-save the weights "
            f"as a state dict or safetensors with code you trust."
        ) from e
    except (EOFError, OSError, ValueError, TypeError) as e:  # truncated archives, garbage bytes
        detail = f"{type(e).__name__}: {_first_line(str(e))}"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({detail})") from e


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0].strip() if lines else "no detail"


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no detail"


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing, empty or malformed file raises one error naming it (never
    unpickles: safetensors holds raw tensors and a JSON header only)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    try:
        return load_file(path, device=device)
    except Exception as e:  # safetensors_rust.SafetensorError is not a ValueError
        raise ValueError(f"{path}: not a readable safetensors file ({_first_line(str(e))})") from e


# --- JSON + tensors: a lossless split of nested state (optimizer, scheduler, RNG) into JSON and tensors ---


def pack_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested state into a JSON-serializable structure and a flat dict of tensors (for safetensors).

    Tensors become ``{"__tensor__": key}``; tuples, non-string-keyed dicts and numpy arrays are tagged so that
    :func:`unpack_tensors` restores them exactly. Anything else that JSON cannot hold raises ``TypeError``.
    """
    import torch

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

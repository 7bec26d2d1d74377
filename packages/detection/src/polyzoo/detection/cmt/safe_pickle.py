"""Read dataset info ``.pkl`` files without running code: a restricted unpickler (NumPy arrays and builtins only).

mmengine's ``load`` (used by ``BaseDataset.load_data_list`` and mmdet3d's ``NuScenesMetric``) fully unpickles an
info file, so a crafted ``.pkl`` in a data folder could run arbitrary code when a dataset is built. The CMT dataset
and metric (:mod:`polyzoo.detection.cmt.mmdet3d_plugin`) read info files through :func:`load_info_pickle` instead.

Allowed globals: builtin containers and scalars (``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``str``,
``bytes``, ``bytearray``, ``int``, ``float``, ``complex``, ``bool``, ``slice``, ``range``), ``collections.OrderedDict``,
``_codecs.encode`` (protocol 2 stores ``bytes`` through it) and what NumPy needs to rebuild arrays, dtypes and
scalars (``ndarray``, ``dtype``, the concrete ``numpy.dtypes`` classes, ``multiarray._reconstruct``,
``multiarray.scalar``, ``numeric._frombuffer``, under ``numpy.core`` and ``numpy._core``). Anything else
(``os.system``, ``builtins.eval``, ``getattr``, any class) is refused with a one-line ``ValueError`` naming the file
and the refused global, before it is called.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool"}
    | {"slice", "range"}
)
_NUMPY_FUNCS = frozenset({"_reconstruct", "scalar", "_frombuffer"})
_NUMPY_MODULES = frozenset(
    {"numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"}
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if module in ("builtins", "__builtin__") and name in _BUILTINS:  # __builtin__: protocols 0-2
            return super().find_class(module, name)
        if (module, name) in (("collections", "OrderedDict"), ("_codecs", "encode")):  # encode: protocol-2 bytes
            return super().find_class(module, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in _NUMPY_MODULES and name in _NUMPY_FUNCS:
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            cls = super().find_class(module, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        raise pickle.UnpicklingError(f"refusing to unpickle the global {module}.{name}")


def load_info_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only NumPy arrays/dtypes/scalars and builtin containers.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: one line naming the file, when it holds anything else or is not a valid pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"info file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, str(path)).load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: {err} (info files may hold only NumPy arrays and builtin containers)") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{path}: not a readable info pickle ({type(err).__name__}: {err})") from None


def _restricted_load(original):
    def load(file, file_format: str | None = None, **kwargs) -> Any:
        name = str(file) if isinstance(file, (str, os.PathLike)) else ""
        fmt = file_format or Path(name).suffix.lstrip(".").lower()
        if fmt in ("pkl", "pickle"):
            if not name:
                raise ValueError("info pickle: only a local file path can be read safely, got a file object")
            return load_info_pickle(name)
        return original(file, file_format=file_format, **kwargs)  # json / yaml: no code execution

    return load


@contextlib.contextmanager
def restricted_mmengine_load(module: ModuleType) -> Iterator[None]:
    """Within the block, ``module.load`` (mmengine's ``fileio.load`` imported there) reads pickles restrictedly."""
    original = module.load
    module.load = _restricted_load(original)
    try:
        yield
    finally:
        module.load = original

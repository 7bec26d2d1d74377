"""The files a security run writes, without pickle: one safetensors file each, its JSON state in the header.

A synthetic set (``synset.safetensors``) and a distillation checkpoint (``checkpoint.safetensors``) hold their
tensors as safetensors and everything else (configuration, history, optimiser hyper-parameters) as JSON in the
header's ``polyzoo`` metadata entry (:func:`polyzoo.shared.io.pack_tensors` splits nested state losslessly). Both
are written atomically (a reader sees the old or the new file, never half of one).

Reading never unpickles: a file that is not safetensors, such as the pickle-based ``synset.pt`` / ``checkpoint.pt``
of earlier versions (a pickle can run code when loaded), raises ``ValueError`` naming it. A run folder that still
holds such a ``checkpoint.pt`` is refused (:func:`refuse_legacy`), so an old run is never silently restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from polyzoo.shared.io import atomic_path, pack_tensors, unpack_tensors

__all__ = ["CHECKPOINT", "LEGACY", "SYNSET", "file_sha256", "read_state", "refuse_legacy", "write_state"]

SYNSET = "synset.safetensors"
CHECKPOINT = "checkpoint.safetensors"
LEGACY = ("synset.pt", "checkpoint.pt")
"""Names of the pickle-based files of earlier versions; never read."""

_KEY = "polyzoo"


def write_state(path: str | os.PathLike, state: dict[str, Any], kind: str) -> None:
    """Write ``state`` (nested dicts/lists of tensors and JSON values) to ``path`` atomically; ``kind`` names the
    content (checked on reading)."""
    meta, tensors = pack_tensors(state)
    header = {_KEY: json.dumps({"kind": kind, "state": meta})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def read_state(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """The state :func:`write_state` wrote with the same ``kind``. ``FileNotFoundError`` if ``path`` is missing,
    ``ValueError`` naming ``path`` for anything else (not safetensors, e.g. an old pickle; another kind; damage)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a {kind} written by `polyzoo security distill`)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = (f.metadata() or {}).get(_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except Exception as exc:  # safetensors raises its own error type for anything that is not safetensors
        hint = (
            " It is an old pickle-based file: polyzoo no longer reads pickles (loading one can run code); "
            "distil again to get a safetensors file."
            if path.name in LEGACY or path.suffix in (".pt", ".pth")
            else ""
        )
        raise ValueError(f"{path}: not a safetensors {kind} ({type(exc).__name__}: {exc}).{hint}") from None
    try:
        content = json.loads(header) if header is not None else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: damaged {kind} metadata ({exc.msg})") from None
    if not isinstance(content, dict) or content.get("kind") != kind:
        found = content.get("kind") if isinstance(content, dict) else None
        raise ValueError(
            f"{path}: not a {kind} written by `polyzoo security distill` (found {found or 'no polyzoo metadata'})"
        )
    try:
        return unpack_tensors(content["state"], tensors)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged {kind}: missing tensor {exc}") from None


def refuse_legacy(run_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming the file if ``run_dir`` holds a pickle-based file of an earlier version."""
    for name in LEGACY:
        old = Path(run_dir) / name
        if old.exists():
            raise ValueError(
                f"{old}: a pickle-based file of an earlier polyzoo version; it is never loaded (a pickle can run "
                f"code). Delete it (and distil again) to use this run folder."
            )


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

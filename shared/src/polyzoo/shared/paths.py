"""Where tests and benchmarks find the real reference data that lives beside a clone (never inside it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data_dir"]


def shared_data_dir(anchor: str | os.PathLike | None = None) -> Path:
    """``$POLYZOO_SHARED_DATA`` if set, else ``<repository root>/../shared/data``.

    The repository root is the nearest folder at or above ``anchor`` (a file or folder; default: the current
    directory) that holds ``uv.lock``. The returned folder may not exist: callers skip with a reason then.
    """
    if env := os.environ.get("POLYZOO_SHARED_DATA"):
        return Path(env)
    start = Path(anchor if anchor is not None else Path.cwd()).resolve()
    for folder in [start, *start.parents]:
        if (folder / "uv.lock").is_file():
            return folder.parent / "shared" / "data"
    return start.parent / "shared" / "data"

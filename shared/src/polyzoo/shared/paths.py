"""Where tests and benchmarks find the real reference data that lives beside a clone (never inside it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REQUIRE_DATA_ENV", "data_required", "missing_data", "shared_data_dir"]

#: Set to ``1`` by ``.ci/run``: data that CI installs (Debian/PyPI packages) must be there, so a test that would
#: skip for want of it fails instead.
REQUIRE_DATA_ENV = "POLYZOO_REQUIRE_DATA"


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


def data_required() -> bool:
    """True when ``$POLYZOO_REQUIRE_DATA`` is set to a true value (``1``, ``true``, ``yes``; CI sets ``1``)."""
    return os.environ.get(REQUIRE_DATA_ENV, "").strip().lower() in {"1", "true", "yes"}


def missing_data(reason: str) -> None:
    """Stop a test whose real data is absent: ``pytest.skip(reason)``, or ``pytest.fail`` when
    :func:`data_required` (CI installed the data, so its absence means the install step broke).

    For tests only; pytest is imported here, not at module import.
    """
    import pytest

    if data_required():
        pytest.fail(f"{reason} [{REQUIRE_DATA_ENV} is set: this data should have been installed]", pytrace=False)
    pytest.skip(reason)

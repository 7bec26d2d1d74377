"""Sharing a table's runs between processes: each run has its own folder, is claimed before it starts and is
finished once its ``result.json`` exists.

The security reproduction's full table takes hours of CPU; several processes given the same run root split it
(``polyzoo reproduce --only security`` started on several cores). A claim is a ``claim`` file created exclusively
(``O_EXCL``) that holds the claimant's pid; the claim of a process that has died is taken over (the run then resumes
from its checkpoint). This works for processes on one machine (pids are local).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from polyzoo.shared.io import read_json

__all__ = ["RESULT", "claim", "run_claimed"]

log = logging.getLogger(__name__)

RESULT = "result.json"
"""The file whose presence marks a run folder as finished (written atomically by the run itself)."""

K = TypeVar("K", bound=Hashable)


def claim(run_dir: Path) -> bool:
    """Take ``run_dir`` for this process; ``False`` while another live process holds it. A claim whose process
    has died is taken over; this process's own claim is kept."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid() or (pid and _alive(pid)):
                return pid == os.getpid()
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_claimed(
    jobs: Mapping[K, Path | None], run: Callable[[K, Path | None], dict[str, Any]], poll_seconds: float = 10.0
) -> dict[K, dict[str, Any]]:
    """The result of every job: read from ``<folder>/result.json`` when finished, else computed by
    ``run(key, folder)`` (which writes that file) once this process holds the folder's claim; jobs held by other
    live processes are waited for (polling every ``poll_seconds``). A job without a folder is simply run."""
    results: dict[K, dict[str, Any]] = {}
    pending = list(jobs)
    while pending:
        waiting = []
        for key in pending:
            folder = jobs[key]
            if folder is not None and (folder / RESULT).exists():
                results[key] = read_json(folder / RESULT)
            elif folder is None or claim(folder):
                results[key] = run(key, folder)
            else:
                waiting.append(key)
        if waiting:
            log.info("waiting for %d run(s) held by other processes", len(waiting))
            time.sleep(poll_seconds)
        pending = waiting
    return results

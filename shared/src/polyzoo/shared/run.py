"""The run contract every polyzoo domain follows: one run folder, one resume rule, one config check.

A run folder holds

- ``config.json``: everything that determines the result (model, data, optimisation, seed), under ``"config"``,
  plus facts that do not change the result (device, tracker, number of processes) under ``"run"``;
- ``metrics.jsonl``: one JSON object per logged step or evaluation (records after the resumed step are trimmed);
- ``checkpoints/step_XXXXXXXX/``: complete checkpoints only. Each is written as ``.step_XXXXXXXX.partial`` and
  renamed when every file is in place, so a folder with the ``step_`` name is complete by construction; partial
  folders left by a killed run are ignored and removed when the run is opened again.

The rule (:meth:`RunDir.open`):

- a new or empty folder: ``config.json`` is written and the run starts;
- the same config: the run resumes from the last complete checkpoint (``resume=False`` on a folder that already
  has checkpoints is refused unless ``overwrite``, so no result is silently replaced);
- another config: refused **before anything is written**, with one line naming the differing keys, unless
  ``overwrite`` (the folder's run files are removed and the run starts again). A refused run never rewrites
  ``config.json``.

Every check on the output path (a file where a folder is expected, a read-only parent) happens before any work,
so a long job never fails at its end for want of a writable folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polyzoo.shared.io import atomic_path, publish_dir, read_json, write_json_atomic

__all__ = [
    "ConfigMismatchError",
    "RunDir",
    "RunError",
    "check_output_dir",
    "check_output_file",
    "config_diff",
    "find_last_checkpoint",
    "jsonable",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
_CKPT_RE = re.compile(r"^step_(\d{8})$")
_PARTIAL_RE = re.compile(r"^\.step_\d{8}\.partial$")
# what a run writes into its folder (and what --overwrite removes; anything else in the folder is left alone)
_RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINTS)


class RunError(ValueError):
    """A run folder cannot be used as asked (user error: the CLI prints it as one ``Error:`` line)."""


class ConfigMismatchError(RunError):
    """The run folder holds a run made with other settings."""

    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON would store it (tuples become lists, paths strings), so that a config compares equal to
    the same config read back from ``config.json``."""
    return json.loads(json.dumps(obj, default=str))


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like configs (a key present on one side only counts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                keys.append(path)
            else:
                keys.extend(config_diff(old[k], new[k], path))
        return keys
    return [] if old == new else [prefix or "<root>"]


def _lookup(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return "(absent)"
        cfg = cfg[part]
    return cfg


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) or value == "(absent)" else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, without creating anything, that ``path`` is (or can become) a writable folder.

    Raises:
        RunError: ``path`` is a file, or the folder (or its nearest existing parent) is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: the {what} is a file; expected a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RunError(f"{path}: cannot create the {what}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"{path}: cannot write the {what}: {probe} is not writable")
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, without creating anything, that a file can be written at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path}: the {what} is a folder; expected a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise RunError(f"{path}: cannot write the {what}: the file is read-only")
    check_output_dir(path.parent, f"folder of the {what}")
    return path


def find_last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder (``checkpoints/step_XXXXXXXX``) of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_dir())
    return found[-1][1] if found else None


class RunDir:
    """A run folder under the contract above.

    Args:
        path: the run folder (``--run-dir``).
        config: everything that determines the result; compared with the folder's ``config.json``.
        run_info: facts recorded but not compared (device, tracker, processes, ...).
        resume: continue from the last complete checkpoint when the config matches (the CLI default).
        overwrite: start again when the folder holds another run (or when ``resume`` is False).
        is_main: only the main process writes (several processes open the same folder).
        engine_files: glob patterns of what an ecosystem engine writes into the folder besides the contract's files
            (transformers' ``checkpoint-*``, mmengine's ``*.pth``): they count as the run's checkpoints for
            ``--no-resume`` and are removed with the run on ``--overwrite``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: Mapping[str, Any],
        *,
        run_info: Mapping[str, Any] | None = None,
        resume: bool = True,
        overwrite: bool = False,
        is_main: bool = True,
        engine_files: Sequence[str] = (),
    ):
        self.path = Path(path)
        self.engine_files = tuple(engine_files)
        self.config = jsonable(dict(config))
        self.run_info = jsonable(dict(run_info or {}))
        self.resume = resume
        self.overwrite = overwrite
        self.is_main = is_main
        self.checkpoint: Path | None = None  # the checkpoint to resume from, set by open()
        self.action: str | None = None  # what open() did: "new", "resume" or "restart"
        self.opened = False

    # ------------------------------------------------------------------------------------------ opening
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def stored_config(self) -> dict[str, Any] | None:
        """The compared part of the folder's ``config.json``, or None when there is none."""
        if not self.config_path.is_file():
            return None
        stored = read_json(self.config_path)
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise RunError(
                f"{self.config_path}: not a polyzoo run config (expected an object with a 'config' key); "
                "use another --run-dir, or --overwrite to start a run here"
            )
        return stored["config"]

    def check(self) -> str:
        """Decide what :meth:`open` will do, writing nothing: ``"new"``, ``"resume"`` or ``"restart"``.

        Raises:
            RunError: the folder cannot be written, holds another run (:class:`ConfigMismatchError`), or has
                checkpoints while ``resume`` is False and ``overwrite`` is not given.
        """
        check_output_dir(self.path, "run folder")
        try:
            stored = self.stored_config()
        except ValueError:  # unreadable config.json: only --overwrite may replace it
            if self.overwrite:
                return "restart"
            raise
        if stored is None:
            others = [p.name for p in self.path.iterdir()] if self.path.is_dir() else []
            leftovers = [n for n in others if n in (METRICS_FILE, CHECKPOINTS)]
            if leftovers and not self.overwrite:
                raise RunError(
                    f"{self.path}: holds {', '.join(leftovers)} but no {CONFIG_FILE}; use another --run-dir, or "
                    "--overwrite to start a run here"
                )
            return "restart" if leftovers else "new"
        keys = config_diff(stored, self.config)
        if keys:
            if self.overwrite:
                return "restart"
            shown = ", ".join(
                f"{k} ({_short(_lookup(stored, k))} → {_short(_lookup(self.config, k))})" for k in keys[:8]
            )
            more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
            raise ConfigMismatchError(
                f"{self.config_path}: this run folder holds a run with other settings: {shown}{more}. "
                "Use another --run-dir, or --overwrite to start again here",
                keys,
            )
        if self.overwrite:
            return "restart"
        if not self.resume and (find_last_checkpoint(self.path) is not None or self._engine_paths()):
            raise RunError(
                f"{self.path}: the run has checkpoints and --no-resume was given; pass --overwrite to start it "
                "again, or drop --no-resume to continue it"
            )
        return "resume" if self.resume else "new"

    def _engine_paths(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted({p for pattern in self.engine_files for p in self.path.glob(pattern)})

    def open(self) -> RunDir:
        """Apply the contract (see :meth:`check`), write ``config.json`` when the run is new or restarted, remove
        partial checkpoints, and set :attr:`checkpoint` to the checkpoint to resume from (or None)."""
        action = self.check()
        if self.is_main:
            if action == "restart":
                for target in [*(self.path / name for name in _RUN_FILES), *self._engine_paths()]:
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
            self.clean_partial()
            if action != "resume" or not self.config_path.is_file():
                write_json_atomic(self.config_path, {"config": self.config, "run": self.run_info})
                if self.metrics_path.exists():
                    self.metrics_path.unlink()
        self.checkpoint = find_last_checkpoint(self.path) if action == "resume" else None
        self.action = action
        self.opened = True
        return self

    # ------------------------------------------------------------------------------------------ checkpoints
    def clean_partial(self) -> None:
        """Remove checkpoint folders a killed run left half-written."""
        if self.checkpoints_dir.is_dir():
            for p in self.checkpoints_dir.iterdir():
                if _PARTIAL_RE.match(p.name):
                    shutil.rmtree(p, ignore_errors=True)

    def last_checkpoint(self) -> Path | None:
        return find_last_checkpoint(self.path)

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:08d}"

    def partial_checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / f".step_{step:08d}.partial"

    def save_checkpoint(
        self, step: int, write: Callable[[Path], None], keep: int = 2, *, start_clean: bool = True
    ) -> Path:
        """Write a checkpoint atomically: ``write(folder)`` fills a partial folder, which is then renamed to
        ``checkpoints/step_XXXXXXXX``; all but the newest ``keep`` complete checkpoints are removed.
        ``start_clean=False`` keeps what other processes already put into the partial folder."""
        final, tmp = self.checkpoint_path(step), self.partial_checkpoint_path(step)
        if start_clean:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, final)
        self.prune_checkpoints(keep)
        return final

    def prune_checkpoints(self, keep: int) -> None:
        found = sorted(p for p in self.checkpoints_dir.iterdir() if _CKPT_RE.match(p.name))
        for old in found[: max(0, len(found) - max(keep, 1))]:
            shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ metrics
    def log_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` (main process only)."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(jsonable(dict(record))) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(ln) for ln in self.metrics_path.read_text().splitlines() if ln.strip()]

    def trim_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they belong to the interrupted part of a resumed run)."""
        if not self.is_main or not self.metrics_path.is_file():
            return
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        write_lines(self.metrics_path, (json.dumps(r) for r in kept))


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Replace a text file atomically with ``lines``."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in lines))

"""Fetch MovieLens-100k in RecBole's atomic format (``ml-100k.inter``, ``.user``, ``.item``) for polyzoo-recsys.

The files ship inside the PyPI wheel of ``recbole`` 1.2.1 at ``recbole/dataset_example/ml-100k/``. This script
runs ``pip download --no-deps recbole==1.2.1`` into a temporary folder and extracts that folder; polyzoo-recsys
does not depend on recbole.

    uv run python tools/data/recsys_movielens.py --target data/ml-100k
    uv run polyzoo recsys ... --data-root data  (or: uv run polyzoo reproduce --only recsys --data-root data)

MovieLens-100k: GroupLens Research, F. Maxwell Harper and Joseph A. Konstan (2015); see its README for the terms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PREFIX = "recbole/dataset_example/ml-100k/"


def _pip() -> list[str]:
    """This interpreter's pip, or the first ``pip`` on PATH (uv virtual environments ship without pip)."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "pip"]
    found = shutil.which("pip") or shutil.which("pip3")
    if found is None:
        raise FileNotFoundError("no pip found: install pip or run this script with a Python that has it")
    return [found]


def fetch(target: Path, version: str = "1.2.1") -> Path:
    """Download the recbole wheel and extract ``ml-100k`` into ``target`` (atomically: a temp folder renamed)."""
    target = Path(target)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*_pip(), "download", "--no-deps", "--only-binary=:all:", "-d", tmp]
        subprocess.run([*cmd, f"recbole=={version}"], check=True)
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download left no recbole wheel in {tmp}")
        staged = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent if target.parent.exists() else None)
        )
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = [n for n in wheel.namelist() if n.startswith(PREFIX) and not n.endswith("/")]
            if not names:
                raise FileNotFoundError(f"{wheels[0].name} has no {PREFIX}")
            for name in names:
                out = staged / name[len(PREFIX) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(name) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=Path, default=Path("data/ml-100k"), help="folder to write ml-100k.* into")
    parser.add_argument("--version", default="1.2.1", help="recbole version whose wheel holds the files")
    args = parser.parse_args()
    out = fetch(args.target, args.version)
    sys.stdout.write(f"MovieLens-100k written to {out}\n")


if __name__ == "__main__":
    main()

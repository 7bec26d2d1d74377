"""Each member installs alone, as a built wheel, with only its declared dependencies, and imports completely.

This is what `pip install polyzoo-<domain>` will do: a missing dependency or a file left out of the wheel
fails here. Every module of the package is imported, and no other domain package is present.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def workspace_members() -> dict[str, Path]:
    """Distribution name → folder, for every member of the uv workspace."""
    members = {}
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(ROOT.glob(pattern)):
            if (folder / "pyproject.toml").is_file():
                members[tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]] = folder
    return members


MEMBERS = workspace_members()
DOMAINS = sorted(name.removeprefix("polyzoo-") for name in MEMBERS)

CHECK = """
import importlib, importlib.util, pkgutil, sys
import polyzoo.{domain} as pkg
assert "site-packages" in pkg.__file__, f"not installed from a wheel: {{pkg.__file__}}"
for mod in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
    importlib.import_module(mod.name)
others = [d for d in {domains!r} if d not in ("{domain}", "shared") and importlib.util.find_spec("polyzoo." + d)]
assert not others, f"other domain packages are installed: {{others}}"
from polyzoo.shared.cli import main
print("ok", pkg.__name__)
"""


def test_every_member_is_checked():
    assert set(MEMBERS) == {
        f"polyzoo-{d}" for d in ["shared", "vision", "video", "detection", "graph", "recsys", "music", "security"]
    }


@pytest.mark.parametrize("domain", DOMAINS)
def test_member_installs_and_imports_alone(domain, uv_bin):
    cmd = [
        uv_bin,
        "run",
        "--isolated",
        "--no-dev",
        "--frozen",
        "--no-editable",
        "--no-compile-bytecode",
        "--package",
        f"polyzoo-{domain}",
        "python",
        "-c",
        CHECK.format(domain=domain, domains=DOMAINS),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"ok polyzoo.{domain}" in proc.stdout

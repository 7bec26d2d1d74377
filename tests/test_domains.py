"""Every domain package is part of the one `polyzoo` namespace and imports no other domain package."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

DOMAINS = ["vision", "video", "detection", "graph", "recsys", "music", "security"]


def test_one_namespace_without_init():
    import polyzoo

    # PEP 420: no polyzoo/__init__.py in any portion of the namespace
    portions = [Path(p).resolve() for p in polyzoo.__path__]
    assert getattr(polyzoo, "__file__", None) is None
    assert portions and not [p for p in portions if (p / "__init__.py").exists()], portions
    # every member (each domain and shared) is found through that one namespace: its package folder sits in one of
    # the namespace's portions (one portion per member in an editable workspace, one shared folder in a wheel
    # install), so ``import polyzoo.X`` resolves through ``polyzoo.__path__`` and not through some other root
    for member in [*DOMAINS, "shared"]:
        module = importlib.import_module(f"polyzoo.{member}")
        folder = Path(module.__file__).resolve().parent
        assert folder.name == member and folder.parent in portions, (member, folder, portions)


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_version_and_no_cross_domain_import(domain):
    code = (
        f"import json, sys, polyzoo.{domain} as pkg; "
        "print(json.dumps([pkg.__version__, "
        "sorted(m for m in sys.modules if m.startswith('polyzoo.') and m.count('.') == 1)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    version, loaded = json.loads(out.strip().splitlines()[-1])
    assert version == metadata.version(f"polyzoo-{domain}")
    assert set(loaded) <= {f"polyzoo.{domain}", "polyzoo.shared"}, loaded

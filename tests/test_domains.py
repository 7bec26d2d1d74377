"""Every domain package is part of the one `polyzoo` namespace and imports no other domain package."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

DOMAINS = ["vision", "video", "detection", "graph", "recsys", "music", "security"]


def test_one_namespace_without_init():
    import polyzoo

    # PEP 420: no polyzoo/__init__.py anywhere, one namespace across the members
    assert getattr(polyzoo, "__file__", None) is None
    assert len(list(polyzoo.__path__)) >= len(DOMAINS) + 1 or any("site-packages" in p for p in polyzoo.__path__)


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

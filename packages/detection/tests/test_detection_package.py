"""polyzoo-detection installs as part of the polyzoo namespace and imports no other domain."""

import json
import subprocess
import sys
from importlib import metadata

import polyzoo
import polyzoo.detection


def test_version_and_namespace():
    assert polyzoo.detection.__version__ == metadata.version("polyzoo-detection")
    # one PEP 420 namespace spans the members: no polyzoo/__init__.py anywhere
    assert getattr(polyzoo, "__file__", None) is None
    assert any(path.endswith("shared/src/polyzoo") or "site-packages" in path for path in polyzoo.__path__)


def test_imports_no_other_domain():
    code = (
        "import json, sys, polyzoo.detection; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('polyzoo.') and m.count('.') == 1)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert "polyzoo.detection" in loaded
    assert loaded <= {"polyzoo.detection", "polyzoo.shared"}, loaded

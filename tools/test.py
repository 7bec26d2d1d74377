"""Test a checkpoint: ``uv run python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out preds.pkl]``.

An official junjie18/CMT checkpoint: pass it as ``cmt-official://PATH``; it is read with ``weights_only=True``, its
keys renamed by ``polyzoo.detection.cmt.official_checkpoint`` into a temporary file, which is then tested.

Distributed: ``torchrun --nproc_per_node=N tools/test.py CONFIG CHECKPOINT --launcher pytorch``.
Logic lives in ``polyzoo.detection.runner.test_main`` (see its --help).
"""

import sys
import tempfile

from polyzoo.detection.cmt.official_checkpoint import resolve_official_args
from polyzoo.detection.runner import test_main

if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="polyzoo-test-") as tmp:
        test_main(resolve_official_args(sys.argv[1:], tmp))

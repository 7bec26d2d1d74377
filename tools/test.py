"""Test a checkpoint: ``uv run python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out preds.pkl]``.

Distributed: ``torchrun --nproc_per_node=N tools/test.py CONFIG CHECKPOINT --launcher pytorch``.
Logic lives in ``polyzoo.detection.runner.test_main`` (see its --help).
"""

from polyzoo.detection.runner import test_main

if __name__ == "__main__":
    test_main()

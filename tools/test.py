"""Test a checkpoint: ``uv run python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out preds.pkl]``.

An official junjie18/CMT checkpoint: pass it as ``cmt-official://PATH`` (CMT configs register that scheme; the keys
are renamed by ``polyzoo.detection.cmt.official_checkpoint`` and read with ``weights_only=True``).

Distributed: ``torchrun --nproc_per_node=N tools/test.py CONFIG CHECKPOINT --launcher pytorch``.
Logic lives in ``polyzoo.detection.runner.test_main`` (see its --help).
"""

from polyzoo.detection.runner import test_main

if __name__ == "__main__":
    test_main()

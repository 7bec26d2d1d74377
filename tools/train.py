"""Train from an mmengine config: ``uv run python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]]``.

Distributed: ``torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch``.
Logic lives in ``polyzoo.detection.runner.train_main`` (see its --help).
"""

from polyzoo.detection.runner import train_main

if __name__ == "__main__":
    train_main()

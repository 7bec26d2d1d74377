"""`tools/train.py --launcher pytorch` (mmengine) on 2 CPU processes (torchrun, gloo) against 1 process, on the
toy CMT config, and the validation that must score each scene exactly once.

CMT holds batch norm everywhere (image backbone and neck, sparse LiDAR encoder, SECOND, FPN), which under DDP
normalises each process's sample on its own (SyncBatchNorm runs on GPUs only). The 1-process run that computes the
same update is therefore the same two samples accumulated one at a time (``optim_wrapper.accumulative_counts=2``,
batch 1): mmengine's seeded sampler gives rank 0 and rank 1 the samples one process takes one after the other,
and CMT's losses are normalised per process by that process's own targets in both runs (no cross-process mean),
so the accumulated half-gradients sum to DDP's mean. The two other random sources are switched off with
``--cfg-options`` because each process draws them from its own stream: the modality masking of the training
pipeline (``ModalMask3D`` p=0) and the denoising queries' noise (``scalar=0``). The trained *parameters* then
agree to float rounding (1e-4 relative + 1e-6 absolute), not bit for bit. The batch-norm running statistics do
not (mmengine's DDP keeps rank 0's, the accumulating run updates them with both samples), so the 2-process
validation is compared with a 1-process `tools/test.py` of the 2-process run's own checkpoint.

The validation set has 3 scenes: mmengine's sampler pads 2 processes' share to 4 and its result collection must
cut the repeat off (a counting metric, ``ddp_sample_count.py``, sees each scene index once).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
TOY = ROOT / "packages" / "detection" / "configs" / "cmt" / "cmt_toy_cpu.py"

CONFIG = f"""_base_ = ["{TOY}"]
custom_imports = dict(
    imports=["polyzoo.detection.cmt.mmdet3d_plugin", "ddp_sample_count"], allow_failed_imports=False
)
val_evaluator = [dict(type="CenterDistanceAP", thresholds=(0.5, 1.0, 2.0, 4.0)), dict(type="SampleIndexCount")]
test_evaluator = val_evaluator
"""


def _env():
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}


def _torchrun(processes: int, script: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += [str(ROOT / "tools" / script), *args, "--launcher", "pytorch"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout + done.stderr


def _metrics(log: str) -> dict[str, float]:
    """The last validation/test line of mmengine's log: ``cda/AP@0.5: 0.1 ... count/samples: 3.0 ...``."""
    lines = [line for line in log.splitlines() if "count/samples" in line]
    assert lines, log[-3000:]
    return {k: float(v) for k, v in re.findall(r"([\w/@.]+): (-?[\d.]+(?:e-?\d+)?)", lines[-1].split("]")[-1])}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from polyzoo.detection.checkpoint import mmengine_safe_globals

    with mmengine_safe_globals():
        return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


@pytest.mark.slow
def test_two_processes_train_as_one_accumulating_and_validate_each_scene_once(tmp_path):
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    train = str(write_toy_dataset(tmp_path / "train", ToySceneConfig(num_scenes=4, seed=5)).parent) + "/"
    val = str(write_toy_dataset(tmp_path / "val", ToySceneConfig(num_scenes=3, seed=6)).parent) + "/"
    config = tmp_path / "cmt_ddp.py"
    config.write_text(CONFIG)
    options = [
        f"train_dataloader.dataset.data_root={train}", f"val_dataloader.dataset.data_root={val}",
        f"test_dataloader.dataset.data_root={val}", "train_dataloader.batch_size=1",
        "train_dataloader.dataset.pipeline.7.p_image=0.0", "train_dataloader.dataset.pipeline.7.p_points=0.0",
        "model.pts_bbox_head.scalar=0", "default_hooks.logger.interval=1",
    ]  # fmt: skip
    steps = 3
    _torchrun(1, "train.py", str(config), "--work-dir", str(tmp_path / "one"), "--cfg-options", *options,
              "optim_wrapper.accumulative_counts=2", f"train_cfg.max_iters={2 * steps}",
              f"train_cfg.val_interval={2 * steps}")  # fmt: skip
    log = _torchrun(2, "train.py", str(config), "--work-dir", str(tmp_path / "two"), "--cfg-options", *options,
                    f"train_cfg.max_iters={steps}", f"train_cfg.val_interval={steps}")  # fmt: skip
    one = _weights(tmp_path / "one" / f"iter_{2 * steps}.pth")
    two = _weights(tmp_path / "two" / f"iter_{steps}.pth")
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = [k for k in one if not k.endswith(buffers)]
    assert len(params) > 50 and set(one) == set(two)
    for key in params:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)

    during = _metrics(log)  # the 2-process validation at the end of training
    assert during["count/samples"] == during["count/distinct"] == 3.0
    alone = _metrics(_torchrun(1, "test.py", str(config), str(tmp_path / "two" / f"iter_{steps}.pth"),
                               "--work-dir", str(tmp_path / "test"), "--cfg-options", *options))  # fmt: skip
    assert alone["count/samples"] == 3.0
    ap = [k for k in alone if k.startswith("cda/")]
    assert "cda/mAP" in ap and len(ap) >= 5
    for key in ap:
        assert during[key] == pytest.approx(alone[key], abs=1e-4), key

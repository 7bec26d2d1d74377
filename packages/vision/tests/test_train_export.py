"""Training with resume on digits, evaluation, the CLI, data readers and ONNX export checked by onnxruntime."""

import dataclasses
import gzip
import json
import shutil
import struct

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from polyzoo.shared.engine import find_last_checkpoint
from polyzoo.shared.run import ConfigMismatchError
from polyzoo.vision.cli import vision
from polyzoo.vision.data import load_data, read_idx
from polyzoo.vision.training import TrainSettings, export_onnx, load_run_model, topk_metrics, train


def test_digits_split_and_shapes():
    data = load_data("digits", img_size=16)
    assert (len(data.train), len(data.eval)) == (1437, 360)
    x, y = data.train[0]
    assert x.shape == (1, 16, 16) and 0 <= int(y) < 10 and data.in_chans == 1


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reader(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 6)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    assert read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").shape == (6, 28, 28)
    data = load_data(f"fashion-mnist:{tmp_path}")
    assert (len(data.train), len(data.eval), data.img_size) == (12, 6, 28)
    with pytest.raises(FileNotFoundError, match="fashion-mnist"):
        load_data(f"fashion-mnist:{tmp_path / 'missing'}")


def test_topk_metrics():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0, -2.0], [5.0, 0.0, 1.0, 2.0, 3.0, 4.0]])
    m = topk_metrics(logits, torch.tensor([1, 1]))
    assert m["top1"] == 0.5 and m["top5"] == 0.5  # the second sample's label is ranked 6th of 6


def test_train_resumes_and_eval_cli(tmp_path):
    s = TrainSettings(
        name="emo",
        runs_dir=str(tmp_path),
        max_steps=3,
        epochs=5,
        batch_size=16,
        img_size=16,
        limit=48,
        progress=False,
        checkpoint_every=2,
    )
    train("emo_1m", "digits", s)
    full = load_file(str(find_last_checkpoint(tmp_path / "emo") / "model.safetensors"))
    # as if killed after the checkpoint at step 2: the last checkpoint and the later metrics are gone
    shutil.rmtree(tmp_path / "emo" / "checkpoints" / "step_00000003")
    metrics = train("emo_1m", "digits", s)  # same settings: resumes at step 2
    assert find_last_checkpoint(tmp_path / "emo").name == "step_00000003"
    resumed = load_file(str(find_last_checkpoint(tmp_path / "emo") / "model.safetensors"))
    assert all(torch.equal(resumed[k], full[k]) for k in full)
    assert set(metrics) == {"eval_loss", "eval_top1", "eval_top5"}
    with pytest.raises(ConfigMismatchError, match=r"vision\.settings\.lr"):  # other settings: refused
        train("emo_1m", "digits", dataclasses.replace(s, lr=0.5))
    model, facts = load_run_model(tmp_path / "emo")
    assert not model.training
    assert facts["model"] == "emo_1m" and facts["in_chans"] == 1
    out = CliRunner().invoke(vision, ["eval", "--run", str(tmp_path / "emo"), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n"] == 360  # the whole evaluation split


def test_cli_help_and_errors(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(vision, ["models"])
    assert listing.exit_code == 0, listing.output
    assert "emo_1m" in listing.stdout and "1,361,168" in listing.stdout and "sot_base" in listing.stdout
    for cmd in ([], ["train"], ["eval"], ["export"]):
        assert runner.invoke(vision, [*cmd, "--help"]).exit_code == 0
    out = runner.invoke(
        vision, ["train", "--model", "emo_1m", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")]
    )
    assert out.exit_code != 0 and "neither" in out.output


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("eca_resnet18", {}), ("emo_1m", {}), ("sot_tiny", {"img_size": 32})],
)
def test_onnx_export_matches_torch(tmp_path, name, kwargs):
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    diff = export_onnx(model, tmp_path / f"{name}.onnx", (1, 3, 32, 32), check=True)
    assert diff is not None and diff < 1e-3


def test_image_folder_run_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    """Random-resized crops, flips and colour jitter (timm's training transform, Python's RNG) with 2 loader
    workers: a run resumed from a mid-epoch checkpoint ends with the weights of an uninterrupted run."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for i in range(8):
            pixels = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / f"class{c}" / f"{i}.png")
    s = TrainSettings(
        run_dir=str(tmp_path / "run"),
        max_steps=5,
        epochs=3,
        batch_size=4,  # 12 training images (80 % of 16): 3 full steps per epoch
        img_size=32,
        checkpoint_every=2,
        num_workers=2,
        progress=False,
    )
    train("emo_1m", str(tmp_path / "imgs"), s)
    ckpts = tmp_path / "run" / "checkpoints"
    full = load_file(str(ckpts / "step_00000005" / "model.safetensors"))
    shutil.rmtree(ckpts / "step_00000005")  # killed after the step-4 checkpoint, one step into the second epoch
    train("emo_1m", str(tmp_path / "imgs"), s)
    resumed = load_file(str(ckpts / "step_00000005" / "model.safetensors"))
    assert all(torch.equal(resumed[k], full[k]) for k in full)

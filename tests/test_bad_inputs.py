"""Every verb of every installed domain against a corpus of bad inputs, through the `polyzoo` command.

Each case builds one bad input (zero-byte, truncated, binary, non-UTF-8, wrong field count, out-of-range index,
malicious pickle, a file where a folder is expected, an unknown name) and runs one verb on it. The verdict is the
same for all: a non-zero exit, one ``Error:`` line that names the offending file (or option), no traceback, no
"internal error" (a user error must be recognised as one), and nothing left half-written. A malicious pickle also
must never run: its payload would create a marker file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from polyzoo.shared.cli import main

MARKER_ENV = "POLYZOO_TEST_PAYLOAD_MARKER"


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f, protocol=2)
    return path


def _installed(domain: str) -> bool:
    return importlib.util.find_spec(f"polyzoo.{domain}") is not None


@dataclasses.dataclass
class Case:
    id: str
    domain: str
    build: Callable[[Path], tuple[list[str], str]]  # tmp -> (args after "polyzoo", text the error must name)


def _file(p: Path, content: bytes | str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        p.write_text(content)
    else:
        p.write_bytes(content)
    return p


NON_UTF8 = b"ok line\n\xff\xfe\xfa broken 1\n"
BINARY = bytes(range(256)) * 4


# ---------------------------------------------------------------------------------------------------- vision
def _vision_cases() -> list[Case]:
    def train_run_dir_is_file(t):
        f = _file(t / "run", "x")
        return ["vision", "train", "--model", "emo_1m", "--data", "digits", "--run-dir", str(f)], str(f)

    def train_fmnist_zero_byte(t):
        d = t / "fm"
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
            _file(d / name, b"")
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            _file(d / name, b"")
        return ["vision", "train", "--model", "emo_1m", "--data", f"fashion-mnist:{d}", "--run-dir", str(t / "r")], (
            "train-images-idx3-ubyte.gz"
        )

    def eval_config_non_utf8(t):
        run = t / "run"
        _file(run / "config.json", NON_UTF8)
        return ["vision", "eval", "--run", str(run)], str(run / "config.json")

    def export_zero_byte_checkpoint(t):
        ck = _file(t / "w.pth", b"")
        return ["vision", "export", "--model", "emo_1m", "--checkpoint", str(ck), "--onnx", str(t / "m.onnx")], str(
            ck
        )

    def export_malicious_checkpoint(t):
        ck = malicious_pickle(t / "w.pth", t / "PWNED")
        return ["vision", "export", "--model", "emo_1m", "--checkpoint", str(ck), "--onnx", str(t / "m.onnx")], str(
            ck
        )

    def export_onnx_is_folder(t):
        (t / "out.onnx").mkdir()
        return ["vision", "export", "--model", "emo_1m", "--onnx", str(t / "out.onnx")], str(t / "out.onnx")

    fns = [
        train_run_dir_is_file,
        train_fmnist_zero_byte,
        eval_config_non_utf8,
        export_zero_byte_checkpoint,
        export_malicious_checkpoint,
        export_onnx_is_folder,
    ]
    return [Case(f"vision-{f.__name__}", "vision", f) for f in fns]


# ----------------------------------------------------------------------------------------------------- video
def _video_cases() -> list[Case]:
    base = ["--backbone", "tiny", "--frames", "2", "--batch-size", "1", "--workers", "0", "--max-steps", "1"]

    def train_list_non_utf8(t):
        ann = _file(t / "list.txt", NON_UTF8)
        return ["video", "train", "--train-list", str(ann), "--run-dir", str(t / "r"), *base], str(ann)

    def train_list_wrong_fields(t):
        ann = _file(t / "list.txt", "a.mp4 0\nb.mp4 1 extra words\n")
        return ["video", "train", "--train-list", str(ann), "--run-dir", str(t / "r"), *base], f"{ann}:2"

    def train_list_binary(t):
        ann = _file(t / "list.txt", BINARY)
        return ["video", "train", "--train-list", str(ann), "--run-dir", str(t / "r"), *base], str(ann)

    def train_list_empty(t):
        ann = _file(t / "list.txt", b"")
        return ["video", "train", "--train-list", str(ann), "--run-dir", str(t / "r"), *base], str(ann)

    def predict_zero_byte_clip(t):
        clip = _file(t / "clip.mp4", b"")
        run = t / "run"
        _file(run / "config.json", "{}")
        return ["video", "predict", str(clip), "--run", str(run)], str(run / "config.json")

    fns = [train_list_non_utf8, train_list_wrong_fields, train_list_binary, train_list_empty, predict_zero_byte_clip]
    return [Case(f"video-{f.__name__}", "video", f) for f in fns]


# ----------------------------------------------------------------------------------------------------- graph
def _graph_cases() -> list[Case]:
    common = ["--epochs", "2", "--patience", "2", "--hidden", "4"]

    def teacher_run_dir_is_file(t):
        f = _file(t / "run", "x")
        return ["graph", "teacher", "--nodes", "60", "--run-dir", str(f), *common], str(f)

    def teacher_data_root_missing(t):
        return ["graph", "teacher", "--dataset", "german", "--data-root", str(t / "nowhere"), "--run-dir",
                str(t / "r"), *common], str(t / "nowhere")  # fmt: skip

    def distill_teacher_config_truncated(t):
        teacher = t / "teacher"
        _file(teacher / "config.json", '{"config": {"teacher": ')
        return ["graph", "distill", "--teacher", str(teacher), "--run-dir", str(t / "s"), *common], str(
            teacher / "config.json"
        )

    def distill_teacher_logits_malicious(t):
        teacher = t / "teacher"
        _file(teacher / "config.json", json.dumps({"config": {"teacher": {}, "data": {"dataset": "synthetic"}}}))
        malicious_pickle(teacher / "logits.safetensors", t / "PWNED")
        return ["graph", "distill", "--teacher", str(teacher), "--run-dir", str(t / "s"), *common], str(
            teacher / "logits.safetensors"
        )

    def eval_not_a_run(t):
        d = t / "some_folder"
        d.mkdir()
        return ["graph", "eval", str(d)], str(d / "config.json")

    fns = [
        teacher_run_dir_is_file,
        teacher_data_root_missing,
        distill_teacher_config_truncated,
        distill_teacher_logits_malicious,
        eval_not_a_run,
    ]
    return [Case(f"graph-{f.__name__}", "graph", f) for f in fns]


# ---------------------------------------------------------------------------------------------------- recsys
def _criteo_row(fields: int = 40) -> str:
    return "\t".join(["1", *["3"] * 13, *["a1b2c3d4"] * 26][:fields])


def _recsys_cases() -> list[Case]:
    def prepare_wrong_field_count(t):
        f = _file(t / "train.txt", _criteo_row() + "\n" + _criteo_row(12) + "\n")
        return ["recsys", "prepare", str(f), "--out", str(t / "fm.json")], f"{f}"

    def prepare_non_utf8(t):
        f = _file(t / "train.txt", (_criteo_row() + "\n").encode() + b"1\t\xff\xfe" + b"\t" * 38 + b"\n")
        return ["recsys", "prepare", str(f), "--out", str(t / "fm.json")], f"{f}:2"  # --skip-bad counts it

    def prepare_empty(t):
        f = _file(t / "train.txt", b"")
        return ["recsys", "prepare", str(f), "--out", str(t / "fm.json")], str(f)

    def prepare_out_is_folder(t):
        f = _file(t / "train.txt", _criteo_row() + "\n")
        (t / "fm.json").mkdir()
        return ["recsys", "prepare", str(f), "--out", str(t / "fm.json")], str(t / "fm.json")

    def train_feature_map_binary(t):
        f = _file(t / "train.txt", _criteo_row() + "\n")
        fm = _file(t / "fm.json", BINARY)
        return ["recsys", "train", str(f), "--feature-map", str(fm), "--run-dir", str(t / "r")], str(fm)

    def eval_truncated_config(t):
        run = t / "run"
        _file(run / "config.json", '{"config": ')
        return ["recsys", "eval", str(run)], str(run / "config.json")

    fns = [
        prepare_wrong_field_count,
        prepare_non_utf8,
        prepare_empty,
        prepare_out_is_folder,
        train_feature_map_binary,
        eval_truncated_config,
    ]
    return [Case(f"recsys-{f.__name__}", "recsys", f) for f in fns]


# ------------------------------------------------------------------------------------------------- detection
def _detection_cases() -> list[Case]:
    config = Path(__file__).resolve().parents[1] / "packages/detection/configs/cmt/cmt_toy_cpu.py"

    def train_config_syntax_error(t):
        cfg = _file(t / "bad_config.py", "model = dict(type='CmtDetector',\n")
        return ["detection", "train", str(cfg), "--run-dir", str(t / "r")], str(cfg)

    def train_run_dir_is_file(t):
        f = _file(t / "run", "x")
        return ["detection", "train", str(config), "--run-dir", str(f), "--device", "cpu"], str(f)

    def eval_zero_byte_checkpoint(t):
        ck = _file(t / "w.pth", b"")
        return ["detection", "eval", str(config), str(ck), "--device", "cpu", "--work-dir", str(t / "w")], str(ck)

    fns = [train_config_syntax_error, train_run_dir_is_file, eval_zero_byte_checkpoint]
    return [Case(f"detection-{f.__name__}", "detection", f) for f in fns]


# ----------------------------------------------------------------------------------------------------- music
def _music_cases() -> list[Case]:
    def convert_short_line(t):
        f = _file(t / "groove.txt", "-oooo--\n" + "------\n" * 15)  # a 7-character line
        return ["music", "convert", str(f), "--out", str(t / "o")], f"{f}:1"

    def convert_empty(t):
        f = _file(t / "groove.txt", b"")
        return ["music", "convert", str(f), "--out", str(t / "o")], str(f)

    def convert_non_utf8(t):
        f = _file(t / "groove.txt", b"------\n\xff\xfe----\n")
        return ["music", "convert", str(f), "--out", str(t / "o")], str(f)

    def convert_zero_byte_midi(t):
        f = _file(t / "groove.mid", b"")
        return ["music", "convert", str(f), "--out", str(t / "o")], str(f)

    def finetune_jsonl_wrong_fields(t):
        f = _file(t / "train.jsonl", '{"prompt": "------\\n"}\n')
        return ["music", "finetune", "--train", str(f), "--from-scratch", "--run-dir", str(t / "r")], str(f)

    def finetune_run_dir_is_file(t):
        f = _file(t / "train.jsonl", '{"prompt": "a", "completion": "b", "name": "g"}\n')
        r = _file(t / "run", "x")
        return ["music", "finetune", "--train", str(f), "--from-scratch", "--run-dir", str(r)], str(r)

    fns = [
        convert_short_line,
        convert_empty,
        convert_non_utf8,
        convert_zero_byte_midi,
        finetune_jsonl_wrong_fields,
        finetune_run_dir_is_file,
    ]
    return [Case(f"music-{f.__name__}", "music", f) for f in fns]


# -------------------------------------------------------------------------------------------------- security
def _security_cases() -> list[Case]:
    def eval_malicious_synset(t):
        f = malicious_pickle(t / "synset.pt", t / "PWNED")
        return ["security", "eval", "--synset", str(f), "--num-eval", "1", "--epochs", "1"], str(f)

    def eval_zero_byte_synset(t):
        f = _file(t / "synset.safetensors", b"")
        return ["security", "eval", "--synset", str(f), "--num-eval", "1", "--epochs", "1"], str(f)

    def defend_truncated_synset(t):
        f = _file(t / "synset.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
        return ["security", "defend", "--synset", str(f)], str(f)

    def distill_unknown_dataset(t):
        return ["security", "distill", "--dataset", "imagenet-21k", "--run-dir", str(t / "r")], "imagenet-21k"

    def distill_run_dir_is_file(t):
        r = _file(t / "run", "x")
        return ["security", "distill", "--dataset", "digits", "--run-dir", str(r)], str(r)

    def distill_fmnist_garbage(t):
        d = t / "fm"
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                     "t10k-labels-idx1-ubyte.gz"):  # fmt: skip
            _file(d / name, BINARY)
        return ["security", "distill", "--dataset", "fashion-mnist", "--data-root", str(d), "--run-dir",
                str(t / "r")], str(d)  # fmt: skip

    fns = [
        eval_malicious_synset,
        eval_zero_byte_synset,
        defend_truncated_synset,
        distill_unknown_dataset,
        distill_run_dir_is_file,
        distill_fmnist_garbage,
    ]
    return [Case(f"security-{f.__name__}", "security", f) for f in fns]


CASES = [
    *_vision_cases(),
    *_video_cases(),
    *_graph_cases(),
    *_recsys_cases(),
    *_detection_cases(),
    *_music_cases(),
    *_security_cases(),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_error_line(case, tmp_path, monkeypatch):
    if not _installed(case.domain):
        pytest.skip(f"polyzoo-{case.domain} is not installed")
    monkeypatch.delenv("POLYZOO_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    args, named = case.build(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    environ = dict(os.environ)  # --device cpu hides GPUs through the environment: keep it to this case
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    out = result.output
    assert result.exit_code != 0, f"exit 0 on bad input: {out}"
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if "Error:" in ln]
    assert len(errors) == 1, out
    assert "internal error" not in errors[0], errors[0]
    assert named in errors[0], f"the error does not name {named}: {errors[0]}"
    assert not (tmp_path / "PWNED").exists(), "a pickle was unpickled"
    half = [p for p in set(tmp_path.rglob("*")) - before if p.name.endswith((".tmp", ".partial"))]
    assert not half, f"half-written files left: {half}"


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYZOO_DEBUG", "1")
    f = _file(tmp_path / "run", "x")
    if not _installed("graph"):
        pytest.skip("polyzoo-graph is not installed")
    result = CliRunner().invoke(main, ["graph", "teacher", "--nodes", "60", "--run-dir", str(f)])
    assert result.exit_code != 0 and result.exception is not None  # raised, so Python prints the traceback
    assert os.environ["POLYZOO_DEBUG"] == "1"

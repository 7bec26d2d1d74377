"""Tiny language-model runs: character tokenizer, finetuning with loss on completions only, resume, text
pretraining, generation and repair, the command line. Offline (HF_HUB_OFFLINE=1 in conftest)."""

from __future__ import annotations

import json

import pytest
import torch

from polyzoo.music.dataset import make_example, write_jsonl
from polyzoo.music.drumroll import NUM_LINES, read_drumroll
from polyzoo.music.generation import repair
from polyzoo.music.lm import (
    LMTrainConfig,
    SmallGPT2Config,
    char_tokenizer,
    finetune,
    load_model,
    new_small_gpt2,
    pretrain_text,
    read_text_corpus,
)
from polyzoo.shared.run import ConfigMismatchError

TINY = SmallGPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=2048, dropout=0.0)


def _groove(seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    core = ["".join("o" if x else "-" for x in row) for row in (torch.rand(16, 6, generator=g) < 0.25).tolist()]
    return core * 16


@pytest.fixture
def train_jsonl(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl([make_example(_groove(i), f"g{i}") for i in range(3)], path)
    return path


def test_char_tokenizer_round_trip_and_save(tmp_path):
    tok = char_tokenizer()
    text = "--o-o-\nSEP\nEND The quick brown fox."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok(["é"], add_special_tokens=False)["input_ids"] == [[tok.unk_token_id]]
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again(text, add_special_tokens=False)["input_ids"] == ids


def test_loss_only_on_completion():
    """Changing the prompt's labels cannot matter: the loss equals a loss computed on completion tokens alone."""
    from polyzoo.music.dataset import CompletionDataset

    tok = char_tokenizer()
    torch.manual_seed(0)
    model = new_small_gpt2(TINY, tok).eval()
    ex = make_example(_groove(0), "g")
    item = CompletionDataset([ex], tok)[0]
    out = model(input_ids=item["input_ids"][None], labels=item["labels"][None])
    logits = out.logits[0, :-1]
    targets = item["input_ids"][1:]
    n_prompt = len(ex["prompt"])
    manual = torch.nn.functional.cross_entropy(logits[n_prompt - 1 :], targets[n_prompt - 1 :])
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_finetune_from_scratch_resumes_and_generates(train_jsonl, tmp_path):
    run = tmp_path / "ft"
    cfg = LMTrainConfig(max_steps=2, batch_size=2, save_steps=1, logging_steps=1, warmup_steps=0, progress=False)
    finetune(train_jsonl, run, scratch=TINY, cfg=cfg)
    assert (run / "final" / "config.json").is_file() and (run / "checkpoint-2").is_dir()
    meta = json.loads((run / "run.json").read_text())
    assert meta["examples"] == 3 and len(meta["loss_history"]) == 2
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics if "loss" in r] == [1, 2]  # the run contract's log, from the callback
    model, tok = load_model(run / "final")
    assert model.config.n_layer == 1 and tok.pad_token_id == 0

    from polyzoo.music.generation import generate_from_jsonl

    examples = [json.loads(x) for x in train_jsonl.read_text().splitlines()][:1]
    stats = generate_from_jsonl(run / "final", examples, tmp_path / "gen", max_new_tokens=40, progress=False)
    assert stats["generated"] == 1 and 0 < stats["tokens"] <= 40
    lines = read_drumroll(tmp_path / "gen" / "text" / "g0.txt")
    assert len(lines) == NUM_LINES and lines[:32] == _groove(0)[:32]
    assert (tmp_path / "gen" / "midi" / "g0.mid").is_file()
    again = generate_from_jsonl(run / "final", examples, tmp_path / "gen", max_new_tokens=40, progress=False)
    assert again["kept"] == 1 and again["generated"] == 0

    # the command, prompted by a MIDI file
    from click.testing import CliRunner

    from polyzoo.music.cli import music
    from polyzoo.music.drumroll import drumroll_to_midi

    drumroll_to_midi(_groove(2), tmp_path / "mine.mid")
    args = [
        "generate",
        "--model",
        str(run / "final"),
        "--prompts",
        str(tmp_path / "mine.mid"),
        "--out",
        str(tmp_path / "gen2"),
        "--max-new-tokens",
        "20",
        "--no-progress",
    ]
    res = CliRunner().invoke(music, args)
    assert res.exit_code == 0, res.output
    assert read_drumroll(tmp_path / "gen2" / "text" / "mine.txt")[:32] == _groove(2)[:32]


def _weights(path):
    return {k: v.clone() for k, v in load_model(path)[0].state_dict().items()}


def test_resume_skips_a_partial_checkpoint(train_jsonl, tmp_path):
    """A run killed while writing checkpoint-3/ (no trainer_state.json yet) resumes from checkpoint-2 and ends with
    the weights of an uninterrupted run."""
    import shutil

    cfg = LMTrainConfig(max_steps=3, batch_size=2, save_steps=1, logging_steps=1, warmup_steps=0, progress=False)
    whole = finetune(train_jsonl, tmp_path / "whole", scratch=TINY, cfg=cfg)
    # the same run, killed while saving checkpoint-3: no final/, no run.json, checkpoint-3 without its state
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", run)
    shutil.rmtree(run / "final")
    (run / "run.json").unlink()
    partial = run / "checkpoint-3"
    (partial / "trainer_state.json").unlink()
    from polyzoo.music.lm import _latest_checkpoint

    assert _latest_checkpoint(run) == run / "checkpoint-2" and not partial.exists()
    partial.mkdir()
    (partial / "config.json").write_text("{}")  # a model file half written
    finetune(train_jsonl, run, scratch=TINY, cfg=cfg)
    meta = json.loads((run / "run.json").read_text())
    assert [r["step"] for r in meta["loss_history"]] == [1, 2, 3] and meta["global_step"] == 3
    assert (run / "checkpoint-3" / "trainer_state.json").is_file()
    ours, ref = _weights(run / "final"), _weights(whole)
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)


def test_finished_run_is_kept_and_other_settings_refused(train_jsonl, tmp_path):
    run = tmp_path / "ft"
    cfg = LMTrainConfig(max_steps=2, batch_size=2, save_steps=100, logging_steps=1, warmup_steps=0, progress=False)
    finetune(train_jsonl, run, scratch=TINY, cfg=cfg)
    # the same request again: already done, nothing retrained
    stamp = (run / "run.json").stat().st_mtime_ns
    finetune(train_jsonl, run, scratch=TINY, cfg=cfg)
    assert (run / "run.json").stat().st_mtime_ns == stamp
    # more steps change the schedule: refused before anything is written, naming the key
    config = (run / "config.json").read_bytes()
    with pytest.raises(ConfigMismatchError, match=r"train\.max_steps \(2 → 4\)"):
        finetune(train_jsonl, run, scratch=TINY, cfg=LMTrainConfig(**{**cfg.__dict__, "max_steps": 4}))
    assert (run / "config.json").read_bytes() == config and (run / "run.json").stat().st_mtime_ns == stamp
    # --overwrite starts again: the old checkpoints and final model go
    finetune(train_jsonl, run, scratch=TINY, cfg=LMTrainConfig(**{**cfg.__dict__, "max_steps": 3}), overwrite=True)
    assert json.loads((run / "run.json").read_text())["global_step"] == 3
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"]
    # the command says so in one line
    from click.testing import CliRunner

    from polyzoo.music.cli import music

    res = CliRunner().invoke(
        music,
        ["finetune", "--train", str(train_jsonl), "--run-dir", str(run), "--from-scratch", "--steps", "5",
         "--layers", "1"],
    )  # fmt: skip
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "train.max_steps (3 → 5)" in res.output
    assert "Traceback" not in res.output


def test_pretrain_text_then_finetune(tmp_path, train_jsonl):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The drummer plays a steady groove. " * 40)
    (corpus / "LICENSE").write_text("Permission is hereby granted, free of charge. " * 30)
    (corpus / "blob.bin").write_bytes(b"\0\1\2" * 100)
    texts = read_text_corpus(corpus)
    assert len(texts) == 2
    cfg = LMTrainConfig(max_steps=2, batch_size=2, save_steps=10, logging_steps=1, warmup_steps=0, progress=False)
    pre = pretrain_text(corpus, tmp_path / "pre", model_config=TINY, cfg=cfg, block_size=64)
    assert json.loads((tmp_path / "pre" / "run.json").read_text())["files"] == 2
    before = load_model(pre)[0].transformer.wte.weight.detach().clone()
    final = finetune(train_jsonl, tmp_path / "ft", model_path=pre, cfg=cfg)
    after = load_model(final)[0].transformer.wte.weight.detach()
    assert after.shape == before.shape and not torch.equal(after, before)
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        load_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="exactly one"):
        finetune(train_jsonl, tmp_path / "x", cfg=cfg)


def test_repair():
    prompt = make_example(_groove(1), "g")["prompt"]
    lines, stats = repair(prompt + "--o-o-\nSEP\n-oX\n\noooooooo\nEND\n------\n")
    assert len(lines) == NUM_LINES and lines[:32] == _groove(1)[:32]
    assert lines[32:35] == ["--o-o-", "-o----", "oooooo"]
    assert stats.ended and stats.fixed_lines == 2 and stats.padded_lines == NUM_LINES - 35
    long, stats = repair("o-----\n" * 300)
    assert len(long) == NUM_LINES and stats.cut_lines == 44 and not stats.ended


def test_cli_prepare_convert_evaluate(fake_gmd, tmp_path):
    from click.testing import CliRunner

    from polyzoo.music.cli import music

    runner = CliRunner()
    res = runner.invoke(music, ["prepare", "--data-root", str(fake_gmd), "--out", str(tmp_path / "d"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "'train': 6" in res.output and "'train': 5" in res.output and "too short" in res.output
    # the same folder with another merge table: one-line error naming the folder and the setting
    res = runner.invoke(
        music,
        ["prepare", "--data-root", str(fake_gmd), "--out", str(tmp_path / "d"), "--merges", "early", "--no-progress"],
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.startswith(f"Error: {tmp_path / 'd'}: prepared with other settings") and "merges" in res.output
    # official-order text plays the right drums: column 4 is the kick (36); the primary_notes reading makes it a snare
    import symusic

    (tmp_path / "kick.txt").write_text("---o--\n" + "------\n" * 15)
    for order, pitch in (("official", 36), ("primary-notes", 38)):
        res = runner.invoke(
            music, ["convert", str(tmp_path / "kick.txt"), "--out", str(tmp_path / order), "--columns", order]
        )
        assert res.exit_code == 0, res.output
        (track,) = symusic.Score(str(tmp_path / order / "kick.mid")).tracks
        assert [(n.time, n.pitch) for n in track.notes] == [(0, pitch)]
    # an empty drumroll file is an error, not an empty MIDI
    (tmp_path / "empty.txt").write_text("")
    res = runner.invoke(music, ["convert", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "ce")])
    assert res.exit_code == 1 and "empty.txt: empty" in res.output and not (tmp_path / "ce" / "empty.mid").exists()
    txt = next((tmp_path / "d" / "text" / "test").glob("*.txt"))
    res = runner.invoke(music, ["convert", str(txt), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(music, ["convert", str(tmp_path / "c" / f"{txt.stem}.mid"), "--out", str(tmp_path / "c2")])
    assert res.exit_code == 0 and (tmp_path / "c2" / txt.name).read_text() == txt.read_text()
    out_json = tmp_path / "eval.json"
    res = runner.invoke(
        music,
        [
            "eval",
            "--human",
            str(txt.parent),
            "--train",
            str(tmp_path / "d" / "text" / "train"),
            "--generated",
            f"copy={txt.parent}",
            "--out",
            str(out_json),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(out_json.read_text())
    assert [r["system"] for r in rows] == ["human", "random", "repeat", "copy"]
    res = runner.invoke(
        music, ["finetune", "--train", str(tmp_path / "d" / "train.jsonl"), "--run-dir", str(tmp_path / "f")]
    )
    assert res.exit_code != 0 and "exactly one of --model PATH or --from-scratch" in res.output

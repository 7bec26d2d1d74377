"""The music reproduction check's pieces: the English corpus, the held-out completion loss (against an own
transcription), the seed-spread verdict, the official raw output form; the quick check end to end (slow)."""

from __future__ import annotations

import math
import os

import pytest

from polyzoo.music import reproduction
from polyzoo.music.generation import official_output_text
from polyzoo.music.reproduction import completion_loss, find_corpus, write_corpus
from polyzoo.shared.paths import missing_data


def test_official_output_text_is_prompt_plus_generation_without_sep_lines():
    prompt = "o-----\n------\nSEP\n---o--\nSEP\n"
    completion = "--o---\n-oooo--\nSEP\n\n----o-\nEND"
    expected = (prompt + completion[: completion.index("END")]).replace("SEP\n", "")
    assert official_output_text(prompt, completion) == expected
    assert expected == "o-----\n------\n---o--\n--o---\n-oooo--\n\n----o-\n"
    # no END: everything generated is kept; a SEP without its newline stays (the official string replace)
    assert official_output_text("------\nSEP\n", "o-----\nSEP") == "------\no-----\nSEP"


def test_write_corpus_reads_plain_files_and_drops_fortune_separators(tmp_path):
    src = tmp_path / "fortunes"
    src.mkdir()
    (src / "wisdom").write_text("A wise word.\n%\nAnother one,\n  on two lines.\n%\n", encoding="utf-8")
    (src / "art").write_text("  (o o)\n%\n", encoding="utf-8")  # drawings: left out
    (src / "wisdom.dat").write_bytes(b"\x00\x00\x00\x02index")  # strfile index: left out
    (src / "binary").write_bytes(b"text\x00more")
    (src / "latin1").write_bytes("caf\xe9\n".encode("latin-1"))
    (src / "wisdom.u8").symlink_to(src / "wisdom")
    out = tmp_path / "corpus" / "corpus.txt"
    counts = write_corpus(src, out)
    text = out.read_text(encoding="utf-8")
    assert text == "A wise word.\nAnother one,\n  on two lines.\n"
    assert counts == {"files": 1, "characters": len(text)}
    write_corpus(src, out, max_chars=10)
    assert out.read_text(encoding="utf-8") == "A wise wor"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no UTF-8 text"):
        write_corpus(tmp_path / "nothing", tmp_path / "c2.txt")


def test_find_corpus_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(reproduction.CORPUS_ENV, str(tmp_path))
    assert find_corpus()[0] == tmp_path
    monkeypatch.setenv(reproduction.CORPUS_ENV, str(tmp_path / "missing"))
    folder, why = find_corpus()
    assert folder is None and "missing" in why
    monkeypatch.delenv(reproduction.CORPUS_ENV)
    monkeypatch.setattr(reproduction, "CORPUS_DIR", tmp_path / "absent")
    folder, why = find_corpus()
    assert folder is None and "apt-get install fortunes" in why


def test_debian_fortunes_corpus_is_sizeable_english_text(tmp_path, monkeypatch):
    """The corpus the full check pretrains on: the Debian package ``fortunes`` (CI installs it)."""
    monkeypatch.delenv(reproduction.CORPUS_ENV, raising=False)
    folder, why = find_corpus()
    if folder is None:
        missing_data(why)
    counts = write_corpus(folder, tmp_path / "c.txt")
    text = (tmp_path / "c.txt").read_text(encoding="utf-8")
    assert counts["files"] >= 30 and counts["characters"] > 2_000_000
    assert sum(c == "\n" or 32 <= ord(c) < 127 for c in text) / len(text) > 0.98  # the character tokenizer's set
    words = text.lower().split()
    assert words.count("the") / len(words) > 0.02  # English prose


def _tiny_model_dir(tmp_path):
    from polyzoo.music.lm import SmallGPT2Config, char_tokenizer, new_small_gpt2

    tok = char_tokenizer()
    model = new_small_gpt2(SmallGPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=256), tok)
    path = tmp_path / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def test_completion_loss_is_the_mean_nll_of_completion_tokens(tmp_path):
    import torch

    path, model, tok = _tiny_model_dir(tmp_path)
    examples = [
        {"prompt": "o-----\nSEP\n", "completion": "---o--\n-o----\nEND", "name": "a"},
        {"prompt": "------\n--o---\nSEP\n", "completion": "oooooo\nEND", "name": "b"},
    ]
    model.eval()
    nll, count = 0.0, 0
    for ex in examples:  # own transcription: next-token log-probabilities of each completion character and EOS
        p = [tok.convert_tokens_to_ids(c) for c in ex["prompt"]]
        c = [tok.convert_tokens_to_ids(ch) for ch in ex["completion"]] + [tok.eos_token_id]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        for k, target in enumerate(c):
            nll -= float(logp[len(p) + k - 1, target])
            count += 1
    assert completion_loss(path, examples) == pytest.approx(nll / count, rel=1e-5)
    assert count == 18 + 11  # 17 and 10 characters, each with its EOS


def test_transfer_verdict_is_the_welch_interval_of_scratch_minus_pretrained():
    """The check's orientation (lower loss is better: the claim is scratch − pretrained > 0) under the report's rule,
    with the 95 % Welch interval written out here: df = 50/17 ≈ 2.94 for these spreads, so the t quantile lies between
    t(0.975, 3) = 3.182 and t(0.975, 2) = 4.303 (printed tables)."""
    from polyzoo.shared.report import compare_arms

    scratch = [1.00, 1.02, 0.98]
    se = math.sqrt(0.02**2 / 3 + 0.01**2 / 3)
    df = se**4 / ((0.02**2 / 3) ** 2 / 2 + (0.01**2 / 3) ** 2 / 2)
    assert df == pytest.approx(50 / 17)
    far = compare_arms(scratch, [0.90, 0.91, 0.89])  # diff 0.10, half-width about 3.2 · 0.0129 = 0.041
    assert far.passed is True and 0.10 - 4.303 * se < far.low < 0.10 - 3.182 * se
    assert compare_arms(scratch, [0.99, 1.01, 0.985]).passed is None
    assert compare_arms(scratch, [1.10, 1.12, 1.08]).passed is False
    assert compare_arms(scratch, [0.5]).passed is None  # one seed decides nothing


@pytest.mark.slow
def test_quick_check_runs_inside_the_report_folder(tmp_path, monkeypatch):
    from polyzoo.shared.report import ReproContext

    monkeypatch.delenv(reproduction.CORPUS_ENV, raising=False)
    out = tmp_path / "report"
    results = reproduction.check(ReproContext(out_dir=out, quick=True, seed=0))
    assert [r.status for r in results] == ["PASS", "INCONCLUSIVE", "INCONCLUSIVE"]
    assert (out / "runs" / "music" / "gen_scratch" / "raw").is_dir()
    for r in results:
        for note in (*r.notes, r.data, r.verdict):
            assert "/tmp" not in note and os.fspath(tmp_path) not in note
        for fig in r.figures:
            assert fig.parent == out


def test_clopper_pearson_matches_closed_forms_and_printed_tables():
    from polyzoo.music.reproduction import clopper_pearson

    # all successes / none: the bound solves p^n = 0.025 (resp. (1 - p)^n = 0.025)
    assert clopper_pearson(8, 8) == (pytest.approx(0.025 ** (1 / 8)), 1.0)
    assert clopper_pearson(0, 16) == (0.0, pytest.approx(1 - 0.025 ** (1 / 16)))
    low, high = clopper_pearson(5, 10)  # printed exact interval for 5/10: 0.1871 to 0.8129
    assert low == pytest.approx(0.1871, abs=1e-4) and high == pytest.approx(0.8129, abs=1e-4)
    with pytest.raises(ValueError, match="k=9, n=8"):
        clopper_pearson(9, 8)


@pytest.mark.parametrize(
    ("ended", "prompts", "expected"),
    [(8, 8, True), (7, 8, None), (0, 8, False), (1, 8, None), (13, 16, True), (12, 16, None), (3, 16, False),
     (4, 16, None), (23, 32, True), (22, 32, None)],
)  # fmt: skip
def test_end_share_verdict_is_the_exact_binomial_test_against_one_half(ended, prompts, expected):
    """PASS iff P(X >= k | p = 1/2) < 0.025 and FAIL iff P(X <= k | p = 1/2) < 0.025 (the 95 % Clopper–Pearson
    interval excludes 1/2), the tails written out here with exact fractions."""
    from fractions import Fraction

    from polyzoo.music.reproduction import end_share_verdict

    above = Fraction(sum(math.comb(prompts, j) for j in range(ended, prompts + 1)), 2**prompts)
    below = Fraction(sum(math.comb(prompts, j) for j in range(ended + 1)), 2**prompts)
    own = True if above < Fraction(1, 40) else False if below < Fraction(1, 40) else None
    assert own is expected
    assert end_share_verdict(ended, prompts) is expected


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_check_trains_scores_and_generates_on_the_context_device(tmp_path, monkeypatch, device):
    """``ReproContext.device`` reaches every training run (``LMTrainConfig.device``, which becomes transformers'
    ``use_cpu`` only for the CPU), the held-out loss and generation; the heavy steps are replaced by recorders."""
    from pathlib import Path

    from polyzoo.music import generation, lm
    from polyzoo.shared.report import ReproContext

    seen: dict[str, list] = {"train": [], "loss": [], "generate": []}

    def fake_train(*args, cfg, **kwargs):
        seen["train"].append(cfg.device)
        return tmp_path / "model"

    def fake_loss(model_dir, examples, device=None):
        seen["loss"].append(device)
        return 1.0

    def fake_generate(model_dir, examples, out_dir, **kwargs):
        seen["generate"].append(kwargs.get("device"))
        for ex in examples:
            raw = Path(out_dir) / "raw" / f"{ex['name']}.txt"
            raw.parent.mkdir(parents=True, exist_ok=True)
            raw.write_text(ex["prompt"].replace("SEP\n", ""), encoding="utf-8")
        return {"ended": 0}

    monkeypatch.setattr(lm, "pretrain_text", fake_train)
    monkeypatch.setattr(lm, "finetune", fake_train)
    monkeypatch.setattr(reproduction, "completion_loss", fake_loss)
    monkeypatch.setattr(generation, "generate_from_jsonl", fake_generate)
    monkeypatch.delenv(reproduction.CORPUS_ENV, raising=False)
    sizes = reproduction.QUICK
    results = reproduction.check(ReproContext(out_dir=tmp_path / "report", quick=True, seed=0, device=device))
    assert [r.status for r in results] == ["PASS", "INCONCLUSIVE", "INCONCLUSIVE"]
    assert seen["train"] == [device] * (sizes.seeds * 3)  # per seed: pretraining, scratch and pretrained finetuning
    assert seen["loss"] == [device] * (sizes.seeds * 2)
    assert seen["generate"] == [device, device]
    if device == "cpu":  # transformers' own CPU switch (a CUDA run needs a GPU to build its arguments)
        args = lm._training_arguments(tmp_path / "args", lm.LMTrainConfig(device=seen["train"][0]))
        assert args.use_cpu is True

"""``polyzoo music``: drum grooves as text (Language Models are Drummers, arXiv 2301.01162).

Pipeline: ``prepare`` (GMD MIDI → drumroll text → prompt/completion JSONL), ``pretrain-text`` (a small
character-level GPT-2 on local English text), ``finetune`` (a local causal LM or ``--from-scratch``), ``generate``
(prompts → 16-bar grooves, text and MIDI), ``evaluate`` (structure metrics against human, random and repeat
baselines; duplication against the training set). ``convert`` turns single files between MIDI and drumroll text.
Everything runs offline; every long step shows a progress bar and resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.options import echo_result, format_option, run_options
from polyzoo.shared.run import check_output_dir

__all__ = ["music"]


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _train_options(f):
    options = [
        click.option("--steps", default=1000, show_default=True, help="Optimizer steps (max_steps)."),
        click.option("--batch-size", default=4, show_default=True),
        click.option("--lr", default=5e-4, show_default=True, help="Peak learning rate (cosine, warm-up)."),
        click.option("--warmup", default=50, show_default=True, help="Warm-up steps."),
        click.option("--save-every", default=200, show_default=True, help="Checkpoint every N steps (resume point)."),
        click.option("--log-every", default=20, show_default=True, help="Steps between training-loss records."),
        click.option(
            "--workers", type=int, default=None, help="Data loader processes (default: 4 on CUDA, 0 on the CPU)."
        ),
        run_options(),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _model_options(f):
    options = [
        click.option("--layers", default=4, show_default=True, help="Small GPT-2: transformer blocks."),
        click.option("--dim", default=128, show_default=True, help="Small GPT-2: embedding width."),
        click.option("--heads", default=4, show_default=True, help="Small GPT-2: attention heads."),
        click.option(
            "--dropout", default=0.1, show_default=True, help="Small GPT-2: dropout (residual, embedding, attention)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _train_config(steps, batch_size, lr, warmup, save_every, log_every, workers, seed, device, precision, log_with):
    from polyzoo.music.lm import LMTrainConfig

    return LMTrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=min(warmup, steps // 10),  # short runs: at most a tenth of the steps
        save_steps=save_every,
        logging_steps=log_every,
        seed=seed,
        device=device,
        precision=precision,
        log_with=log_with,
        num_workers=workers,
    )


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
def music() -> None:
    """Drum grooves as text: prepare data, pretrain, finetune, generate and evaluate (arXiv 2301.01162).

    Typical run: prepare --data-root GMD --out data; pretrain-text --corpus /usr/share/common-licenses --run-dir
    runs/text; finetune --train data/train.jsonl --model runs/text/final --run-dir runs/ft; generate --model
    runs/ft/final --prompts data/test.jsonl --out gen; eval --human data/text/test --train data/text/train
    --generated model=gen/text.
    """
    _offline()


_COLUMNS_OPTION = click.option(
    "--columns",
    type=click.Choice(["official", "primary-notes"]),
    default="official",
    show_default=True,
    help="Column order of the text: the official data's (crash, ride, snare, kick, hi-hat, tom), or the order of "
    "the official primary_notes list (crash, ride, hi-hat, snare, kick, tom; some official text_to_midi.py versions "
    "read text that way, so official text plays the wrong drums).",
)


@music.command()
@click.option(
    "--data-root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Groove MIDI Dataset folder (MIDI files and info.csv).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option(
    "--merges",
    type=click.Choice(["official", "early"]),
    default="official",
    show_default=True,
    help="Articulation merge table: the one the official data was made with, or the early committed one (without "
    "55/52 → crash, 22/26 → hi-hat, 58 → tom).",
)
@_COLUMNS_OPTION
@click.option(
    "--time-signatures",
    type=click.Choice(["x/4", "4/4"]),
    default="x/4",
    show_default=True,
    help="x/4: every x/4 beat, 16 bars of its own length (official; 3/4 gives 192 lines); 4/4: only 4/4 files.",
)
@click.option(
    "--include-eval-session",
    is_flag=True,
    help="Keep drummer1's eval_session re-recordings in the test split (official: left out; 37 vs 77 test beats).",
)
@click.option("--all-types", is_flag=True, help="Keep fills too (default: beats only, as the paper).")
@click.option(
    "--official-names",
    is_flag=True,
    help="Official file names (1_239_funk-purdieshuffle_130_beat_4-4.txt) and split folders train/dev/test, to "
    "compare with the shipped data_text; default drummer1_session1_239_..., train/validation/test.",
)
@click.option(
    "--strip",
    type=click.Choice(["beat", "measure"]),
    default="beat",
    show_default=True,
    help="Examples: drop leading empty quarter notes a beat at a time (the prompts of the shipped GPT-3 outputs) or "
    "a measure at a time (the later official gpt3_*.jsonl).",
)
@click.option("--overwrite", is_flag=True, help="Rebuild an output folder prepared with other settings.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def prepare(
    data_root: Path,
    out: Path,
    merges: str,
    columns: str,
    time_signatures: str,
    include_eval_session: bool,
    all_types: bool,
    official_names: bool,
    strip: str,
    overwrite: bool,
    progress: bool,
) -> None:
    """Convert a GMD-style folder into drumrolls (OUT/text/<split>/*.txt) and prompt/completion JSONL
    (OUT/<split>.jsonl); skipped files and their reasons go to OUT/prepare_report.json, the settings and inputs to
    OUT/prepare_manifest.json. The defaults reproduce the official data (373 / 47 / 37 drumrolls on GMD v1.0.0)."""
    from polyzoo.music.dataset import PrepareSettings, prepare_gmd

    settings = PrepareSettings(
        merges=merges,
        columns=columns,
        time_signatures=time_signatures,
        include_eval_session=include_eval_session,
        beats_only=not all_types,
        names="official" if official_names else "polyzoo",
        strip=strip,
    )
    report = prepare_gmd(data_root, out, settings, overwrite=overwrite, progress=progress)
    click.echo(f"drumrolls: {report.converted}")
    click.echo(f"examples: {report.examples}")
    click.echo(f"skipped: {len(report.skipped)} {report.reasons()} (details in {out / 'prepare_report.json'})")


@music.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--no-pad", is_flag=True, help="MIDI → text: stop at the last onset instead of padding to 16 bars.")
@_COLUMNS_OPTION
@click.option(
    "--merges",
    type=click.Choice(["official", "early"]),
    default="official",
    show_default=True,
    help="MIDI → text: articulation merge table.",
)
def convert(inputs: tuple[Path, ...], out: Path, no_pad: bool, columns: str, merges: str) -> None:
    """Convert files: .mid/.midi → drumroll .txt, .txt → .mid (480 tpq, 120 bpm, velocity 100, drum channel; column
    i plays the --columns order's pitch i, so official text plays crash, ride, snare, kick, hi-hat, tom)."""
    from polyzoo.music.drumroll import (
        COLUMN_ORDERS,
        MERGES,
        SkippedMidi,
        drumroll_to_midi,
        midi_to_drumroll,
        read_drumroll,
        write_drumroll,
    )

    order = COLUMN_ORDERS[columns]
    bad = [p for p in inputs if p.suffix.lower() not in (".mid", ".midi", ".txt")]
    if bad:
        raise click.BadParameter(f"{bad[0]}: expected a .mid, .midi or .txt file", param_hint="INPUTS")
    skipped = 0
    for path in inputs:
        if path.suffix.lower() in (".mid", ".midi"):
            try:
                lines = midi_to_drumroll(path, pad=not no_pad, columns=order, merges=MERGES[merges])
            except SkippedMidi as e:
                click.echo(str(e), err=True)
                skipped += 1
                continue
            write_drumroll(lines, out / f"{path.stem}.txt", columns=order)
        else:
            lines = read_drumroll(path, num_lines=None, columns=order)
            drumroll_to_midi(lines, out / f"{path.stem}.mid", columns=order)
    if skipped == len(inputs):
        raise click.ClickException(f"nothing converted: all {skipped} input(s) skipped")
    click.echo(f"converted {len(inputs) - skipped}, skipped {skipped} → {out}")


@music.command("pretrain-text")
@click.option(
    "--corpus",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of local English text files (e.g. /usr/share/common-licenses).",
)
@click.option("--block-size", default=256, show_default=True, help="Characters per training block.")
@click.option("--max-chars", default=None, type=int, help="Read at most this many characters of the corpus.")
@_model_options
@_train_options
def pretrain_text(
    corpus, block_size, max_chars, layers, dim, heads, dropout, run_dir, resume, overwrite, **train
) -> None:
    """Train the small character-level GPT-2 on local text; RUN_DIR/final is a model directory for
    `finetune --model`. Rerunning with the same settings resumes; others are refused unless --overwrite."""
    from polyzoo.music.lm import SmallGPT2Config, pretrain_text

    check_output_dir(run_dir, "run folder")  # before the corpus is read
    final = pretrain_text(
        corpus,
        run_dir,
        model_config=SmallGPT2Config(n_layer=layers, n_embd=dim, n_head=heads, dropout=dropout),
        cfg=_train_config(**train),
        block_size=block_size,
        max_chars=max_chars,
        resume=resume,
        overwrite=overwrite,
    )
    click.echo(f"model: {final}")


@music.command()
@click.option(
    "--train",
    "train_jsonl",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Prompt/completion JSONL (from `prepare`).",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Local causal LM directory (model + tokenizer, e.g. a GPT-2 on disk or pretrain-text's final).",
)
@click.option("--from-scratch", is_flag=True, help="A randomly initialised small GPT-2 with a character tokenizer.")
@click.option(
    "--eval",
    "eval_jsonl",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Held-out prompt/completion JSONL (e.g. prepare's validation.jsonl) scored after training: completion-token "
    "NLL and perplexity.",
)
@_model_options
@_train_options
def finetune(
    train_jsonl, model_path, from_scratch, eval_jsonl, layers, dim, heads, dropout, run_dir, resume, overwrite, **train
) -> None:
    """Finetune with transformers' Trainer, loss on completions only, into RUN_DIR; rerunning with the same settings
    resumes from RUN_DIR/checkpoint-*, other settings are refused unless --overwrite. Several processes:
    torchrun --nproc_per_node N -m polyzoo.shared.cli music finetune ... (each takes --batch-size a step)."""
    from polyzoo.music.lm import SmallGPT2Config, finetune

    if bool(model_path) == from_scratch:
        raise click.UsageError("give exactly one of --model PATH or --from-scratch")
    check_output_dir(run_dir, "run folder")  # before the data and the model are loaded
    scratch = SmallGPT2Config(n_layer=layers, n_embd=dim, n_head=heads, dropout=dropout) if from_scratch else None
    final = finetune(
        train_jsonl,
        run_dir,
        model_path=model_path,
        scratch=scratch,
        cfg=_train_config(**train),
        resume=resume,
        overwrite=overwrite,
        eval_jsonl=eval_jsonl,
    )
    click.echo(f"model: {final}")
    if eval_jsonl is not None and (final.parent / "run.json").is_file():
        evaluation = json.loads((final.parent / "run.json").read_text(encoding="utf-8")).get("eval")
        if evaluation:
            click.echo(json.dumps(evaluation))


@music.command()
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Finetuned model directory (finetune's OUT/final).",
)
@click.option(
    "--prompts",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL with prompt and name fields (e.g. prepare's test.jsonl).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: text/<name>.txt and midi/<name>.mid.",
)
@click.option("--limit", type=int, default=None, help="Only the first N prompts.")
@click.option("--temperature", default=0.9, show_default=True)
@click.option("--max-new-tokens", type=int, default=None, help="Default: the longest possible completion + 10%.")
@click.option("--seed", default=0, show_default=True)
@_COLUMNS_OPTION
@click.option("--progress/--no-progress", default=True, show_default=True)
def generate(model_path, prompts, out, limit, temperature, max_new_tokens, seed, columns, progress) -> None:
    """Complete each 2-bar prompt until END, repair it into a 16-bar drumroll and write text and MIDI; grooves
    already written are kept (resumable)."""
    from polyzoo.music.dataset import prompt_from_drumroll, read_jsonl
    from polyzoo.music.drumroll import COLUMN_ORDERS, midi_to_drumroll, read_drumroll
    from polyzoo.music.generation import generate_from_jsonl

    order = COLUMN_ORDERS[columns]
    suffix = prompts.suffix.lower()
    if suffix in (".mid", ".midi"):
        examples = [prompt_from_drumroll(midi_to_drumroll(prompts, columns=order), prompts.stem)]
    elif suffix == ".txt":
        examples = [prompt_from_drumroll(read_drumroll(prompts, num_lines=None, columns=order), prompts.stem)]
    else:
        examples = read_jsonl(prompts, required=("prompt", "name"))[:limit]
    stats = generate_from_jsonl(
        model_path,
        examples,
        out,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
        columns=order,
        progress=progress,
    )
    click.echo(json.dumps({k: v for k, v in stats.items() if k != "repairs"}))


@music.command(name="eval")
@click.option(
    "--human",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of human drumrolls (e.g. prepare's text/test); random/repeat baselines derive from it.",
)
@click.option(
    "--generated",
    multiple=True,
    metavar="NAME=DIR",
    help="A system's drumroll folder (generate's OUT/text); repeatable.",
)
@click.option(
    "--train",
    "train_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Training drumrolls for the duplication analysis (e.g. prepare's text/train).",
)
@click.option(
    "--kmeans",
    type=click.Choice(["exact", "sklearn"]),
    default="exact",
    show_default=True,
    help="1-D two-means: exact optimum, or the official scikit-learn KMeans call.",
)
@click.option("--out", "out_json", type=click.Path(dir_okay=False, path_type=Path), help="Also write rows as JSON.")
@format_option
def evaluate(human, generated, train_dir, kmeans, out_json, fmt) -> None:
    """Structural metrics (mean stability, two-means gap and spread) of human, random, repeat and each generated
    set, on the grooves they share; duplication of generated bars in the training set. Files are scored as they
    are, as the paper's metric does (16-line blocks of the raw text): malformed lines and missing bars are counted
    per system (malformed_lines, grooves_malformed, short_grooves, unscored_grooves), not refused; only an
    unreadable file (missing, empty, binary, not UTF-8) stops the command, with one line naming it."""
    from polyzoo.music.evaluation import evaluate_systems, read_groove_folder

    human_rolls = read_groove_folder(human)
    systems = {}
    for item in generated:
        name, sep, folder = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=DIR", param_hint="--generated")
        rolls = read_groove_folder(folder)
        systems[name] = rolls
        missing = set(rolls) - set(human_rolls)
        if missing:
            raise click.BadParameter(f"{folder}: grooves without a human counterpart: {sorted(missing)[:5]}")
    if systems:  # compare on the grooves every system generated
        shared = set(human_rolls).intersection(*map(set, systems.values()))
        if not shared:
            raise click.BadParameter("no groove is present in --human and in every --generated folder")
        human_rolls = {k: v for k, v in human_rolls.items() if k in shared}
        systems = {n: {k: v for k, v in s.items() if k in shared} for n, s in systems.items()}
    reference = read_groove_folder(train_dir) if train_dir else None
    rows = evaluate_systems(human_rolls, systems, reference, kmeans)
    echo_result(rows, fmt)
    if out_json:
        from polyzoo.shared.io import write_json_atomic

        write_json_atomic(out_json, rows)


music.add_command(
    click.Command("evaluate", callback=evaluate.callback, params=evaluate.params, hidden=True, help="Old name of eval.")
)

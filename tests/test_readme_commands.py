"""Every command in README.md, shared/README.md and packages/*/README.md runs as written (issue 23, item 7).

The ```bash and ```python blocks are extracted from the Markdown. The fast tests check the extraction (so a README
edit that breaks it, or leaves a skip/cut entry below pointing at nothing, fails the default run) and that every
Python block compiles. The slow test runs each block in a temporary folder laid out like a clone (``tools`` and
``packages`` linked, ``../shared/data`` linked to the real data when present), with toy data made by the test where a
command names a file the README does not make, and with long commands shortened by options the test appends
(:data:`CUT`; click and argparse take the last value of a repeated option). ``uv run CMD`` runs ``CMD`` from this
environment (a ``uv`` shim first on ``PATH``), so nothing is installed. Commands that cannot run here are listed in
:data:`SKIP` with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = (
    "README.md",
    "shared/README.md",
    *sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("packages/*/README.md")),
)
FENCE = re.compile(r"^```(bash|python)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)

INSTALLS = "installs from an index"
# normalized command (comments removed, whitespace collapsed) -> why it is not run
SKIP = {
    "uv run polyzoo reproduce --quick": "every check of every domain (minutes); each domain's `reproduce --quick "
    "--only D` line in its README is run instead",
    "uv run pytest": "the test suite itself",
    "uv run pytest -m slow": "the test suite itself",
    'uv run pytest -m "slow or not slow"': "the test suite itself",
    "uv run python tools/bench/run.py": "every benchmark (tens of minutes); the named benchmarks are run with --quick",
    "torchrun --nproc_per_node=8 tools/train.py CONFIG --launcher pytorch": "a template (CONFIG) for 8 processes",
    "uv run torchrun --nproc_per_node 8 tools/train.py CONFIG --launcher pytorch": "a template (CONFIG) for 8 GPUs",
    "uv run python tools/train.py ... --resume": "a template (`...` stands for the options of the line above)",
    "uv run python tools/test.py packages/detection/configs/cmt/cmt_toy_cpu.py work_dirs/cmt_toy_cpu/iter_50.pth ...": (
        "a template (`...` stands for the options of the train line)"
    ),
    "uv run polyzoo detection train CONFIG --run-dir runs/cmt --seed 0 --device auto --precision fp32 --cfg-options "
    "train_cfg.max_iters=50": "a template (CONFIG)",
    "uv run polyzoo detection eval CONFIG runs/cmt/iter_50.pth --format json": "a template (CONFIG)",
    "uv run polyzoo video eval --checkpoint TCP_official.pth.tar --list k400_val.txt --data-root k400/": (
        "needs the official TCP checkpoint and Kinetics-400 videos (downloads)"
    ),
    "uv run polyzoo vision train --model sot_tiny --data path/to/images --img-size 224 --run-dir runs/sot": (
        "a template (path/to/images: your own image folder)"
    ),
    "uv run polyzoo reproduce --only graph --data-root ../shared/data": "full mode, 5 seeds on German and NBA (long)",
    "uv run polyzoo reproduce --only music --data-root ../shared/data": "full mode on GMD (long)",
    "uv run polyzoo reproduce --only vision --data-root D": "full mode: about 2 h of one CPU core",
    "for w in 1 2; do OMP_NUM_THREADS=1 uv run polyzoo reproduce --only security --out reports/security & done; wait": (
        "two full-mode security reproductions in parallel (long)"
    ),
    "uv sync --all-packages --all-extras && uv run python tools/bench/run.py music": "installs extras from an index",
}
SKIP_PREFIXES = {"pip install": INSTALLS, "uv sync": "changes the environment the tests run in (installs/removes)"}

# (regex on the normalized command, text appended): shorter runs of the long commands
CUT = (
    (
        r"^uv run python tools/train\.py \S+cmt_toy_cpu\.py --cfg-options",
        " train_cfg.max_iters=2 train_cfg.val_interval=2",
    ),
    (r"^uv run python tools/train\.py \S+reft_tiny_shapes\.py$", " --cfg-options train_cfg.max_iters=2"),
    (r"torchrun --nproc_per_node 2 tools/train\.py \S+cmt_toy_cpu\.py .*--cfg-options", " train_cfg.max_iters=2"),
    (r"^uv run polyzoo detection train \S+reft_tiny_shapes\.py", " --cfg-options train_cfg.max_iters=2"),
    (r"^uv run polyzoo detection cmt-check$", " --steps 2"),
    (r"^uv run polyzoo graph (teacher|distill) ", " --epochs 5"),
    (r"^uv run polyzoo recsys train ", " --checkpoint-every 1"),
    (r"^uv run polyzoo music (finetune|pretrain-text) ", " --steps 3 --warmup 1 --save-every 3"),
    (r"^uv run polyzoo music generate ", " --limit 2 --max-new-tokens 32"),
    (r"^uv run polyzoo security distill ", " --iterations 2"),
    (r"torchrun .*-m polyzoo\.shared\.cli security distill ", " --iterations 2"),
    (r"torchrun .*-m polyzoo\.shared\.cli security eval ", " --epochs 2"),
    (r"torchrun .*-m polyzoo\.shared\.cli vision train ", " --epochs 1 --max-steps 2 --limit 64"),
    (r"torchrun .*-m polyzoo\.shared\.cli graph teacher ", " --epochs 5"),
    (r"^uv run polyzoo security eval ", " --num-eval 1 --epochs 2"),
    (r"^uv run polyzoo security defend ", " --epochs 2"),
    (r"^uv run polyzoo video train ", " --epochs 1 --max-steps 2"),
    (r"^uv run polyzoo vision train ", " --epochs 1 --max-steps 2 --limit 64"),
    (r"^uv run (--with av )?python tools/bench/run\.py \S", " --quick"),
)


@dataclass(frozen=True)
class Block:
    path: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def readme_blocks() -> list[Block]:
    """The ```bash and ```python blocks of every README, in order."""
    out = []
    for rel in READMES:
        text = (REPO / rel).read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            out.append(Block(rel, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)))
    return out


def _strip_comment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` at the start of a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(block: Block) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments removed, whitespace collapsed."""
    joined = re.sub(r"\\\n", " ", block.text)
    commands = []
    for line in joined.splitlines():
        cmd = " ".join(_strip_comment(line).split())
        if cmd:
            commands.append(cmd)
    return commands


# (regex on the normalized command, why it needs a GPU): skipped where CUDA is absent, run where it is present
GPU_ONLY = (
    (r"--device cuda", "trains on a CUDA GPU"),
    (r"--multi_gpu", "several GPUs"),
    (r"--nproc_per_node[ =]8 ", "8 GPUs, one process each"),
    (
        r"^uv run python tools/gpu/acceptance\.py(?!.*--device cpu)",
        "realistic sizes for a GPU (hours on a CPU); the `--device cpu --quick` line runs",
    ),
)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def skip_reason(cmd: str) -> str | None:
    if cmd in SKIP:
        return SKIP[cmd]
    reason = next((reason for prefix, reason in SKIP_PREFIXES.items() if cmd.startswith(prefix)), None)
    if reason is None and not _cuda():
        reason = next((f"needs a CUDA GPU: {why}" for pattern, why in GPU_ONLY if re.search(pattern, cmd)), None)
    return reason


def as_run(cmd: str) -> str:
    """The command the slow test runs: ``cmd`` with the :data:`CUT` options appended."""
    for pattern, extra in CUT:
        if re.search(pattern, cmd):
            return cmd + extra
    return cmd


# ---------------------------------------------------------------------------------------------- fast: extraction


def test_blocks_are_extracted_from_every_readme():
    blocks = readme_blocks()
    by_file = {b.path for b in blocks}
    assert {"README.md", "packages/detection/README.md", "packages/vision/README.md"} <= by_file
    assert all(b.lang in ("bash", "python") and b.text.strip() for b in blocks)
    for b in blocks:
        if b.lang == "bash":
            cmds = shell_commands(b)
            assert cmds, f"{b.id}: a bash block without a command"
            for c in cmds:
                assert not c.endswith("\\"), f"{b.id}: a continuation line was not joined: {c}"
                words = c.split()
                while words and re.match(r"[A-Z_][A-Z0-9_]*=", words[0]):  # leading VAR=value assignments
                    words = words[1:]
                assert words and words[0] in ("uv", "pip", "torchrun", "for"), f"{b.id}: unexpected command {c!r}"


def test_python_blocks_compile():
    for b in readme_blocks():
        if b.lang == "python":
            compile(b.text, b.id, "exec")


def test_skip_and_cut_tables_name_readme_commands():
    cmds = {c for b in readme_blocks() if b.lang == "bash" for c in shell_commands(b)}
    stale = sorted(set(SKIP) - cmds)
    assert not stale, f"SKIP entries that match no README command (a README line changed?): {stale}"
    for pattern, _ in CUT:
        assert any(re.search(pattern, c) for c in cmds), f"CUT pattern {pattern!r} matches no README command"
    for needle, _ in SETUP:
        assert any(needle in b.text for b in readme_blocks()), f"SETUP entry {needle!r} matches no README block"
    for pattern, _ in GPU_ONLY:
        assert any(re.search(pattern, c) for c in cmds), f"GPU_ONLY pattern {pattern!r} matches no README command"


def test_comment_stripping_and_joining():
    b = Block("x", 1, "bash", 'uv run a "b # not a comment" \\\n    --c 1   # a comment\n\nuv run d#e\n')
    assert shell_commands(b) == ['uv run a "b # not a comment" --c 1', "uv run d#e"]
    assert as_run("uv run polyzoo detection cmt-check") == "uv run polyzoo detection cmt-check --steps 2"
    assert skip_reason("pip install ./packages/graph") == INSTALLS


# ---------------------------------------------------------------------------------------------- slow: run them

UV_SHIM = """#!/usr/bin/env bash
# README test: `uv run [--with PKG] [--frozen] CMD ...` runs CMD from the test's environment (nothing installed)
if [ "$1" != run ]; then echo "README test: only 'uv run' is supported, got: uv $*" >&2; exit 97; fi
shift
while [[ "$1" == --* ]]; do case "$1" in --with) shift 2 ;; *) shift ;; esac; done
exec "$@"
"""


def _toy_criteo(path: Path, rows: int = 1000) -> None:
    """A toy file in the Criteo format: label, 13 integer and 26 hashed categorical fields, tab-separated (1000 rows:
    the official split puts rows 801-999 of every thousand in the test split)."""
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(rows):
        ints = [str(rng.randint(0, 20)) if rng.random() > 0.1 else "" for _ in range(13)]
        cats = [f"{rng.randint(0, 5):08x}" if rng.random() > 0.1 else "" for _ in range(26)]
        lines.append("\t".join([str(rng.randint(0, 1)), *ints, *cats]))
    path.write_text("\n".join(lines) + "\n")


def _toy_videos(cwd: Path) -> None:
    """``train.txt`` / ``val.txt`` listing clips under ``videos/`` for the video README's Python block."""
    from polyzoo.video.synthetic import make_dataset

    for split, path in make_dataset(cwd / "videos", {"train": 1, "val": 1}).items():
        (cwd / f"{split}.txt").write_text(path.read_text())


def _music_files(cwd: Path) -> None:
    """``some.mid`` (a Groove MIDI file from ../shared/data) and ``other.txt`` (its drumroll text) for `convert`."""
    import shutil

    midi = next(iter(sorted((cwd.parent / "shared" / "data" / "drums" / "groove").rglob("*.mid"))), None)
    if midi is None:
        pytest.skip("needs a Groove MIDI file in ../shared/data/drums/groove")
    shutil.copy(midi, cwd / "some.mid")
    subprocess.run(["polyzoo", "music", "convert", "some.mid", "--out", "setup_txt"], cwd=cwd, check=True, env=_ENV)
    shutil.copy(next((cwd / "setup_txt").glob("*.txt")), cwd / "other.txt")


def _toy_recsys_inputs(cwd: Path) -> None:
    """The other inputs of the recsys `prepare` block: Avazu rows (the sample in ../shared/data/ctr, else a toy
    file in its format), RecBole-style ``data/ml-100k`` atomic files and a TSV with its own schema."""
    import random
    import shutil

    rng = random.Random(0)
    sample = cwd.parent / "shared" / "data" / "ctr" / "avazu_sample.txt"
    if sample.is_file():
        shutil.copy(sample, cwd / "train.csv")
    else:
        cols = ["id", "click", "hour", "C1", "banner_pos", *(f"f{i}" for i in range(11))]
        cols += [f"C{i}" for i in range(14, 22)]
        rows = [",".join(cols)]
        for k in range(200):
            rest = [f"{rng.randint(0, 4):x}" for _ in range(len(cols) - 3)]
            rows.append(",".join([str(k), str(rng.randint(0, 1)), f"141021{rng.randint(0, 23):02d}", *rest]))
        (cwd / "train.csv").write_text("\n".join(rows) + "\n")
    ml = cwd / "data" / "ml-100k"
    ml.mkdir(parents=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{rng.randint(1, 20)}\t{rng.randint(1, 30)}\t{rng.randint(1, 5)}\t{t}" for t in range(300)]
    (ml / "ml-100k.inter").write_text("\n".join(inter) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    users += [
        f"{u}\t{rng.randint(15, 70)}\t{rng.choice('MF')}\tjob{u % 4}\t{rng.randint(10000, 99999)}" for u in range(1, 21)
    ]
    (ml / "ml-100k.user").write_text("\n".join(users) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    genres = ["Comedy", "Drama War", "Action"]
    items += [f"{i}\tT{i}\t{rng.randint(1950, 1998)}\t{rng.choice(genres)}" for i in range(1, 31)]
    (ml / "ml-100k.item").write_text("\n".join(items) + "\n")
    (cwd / "my_schema.yaml").write_text(
        "name: clicks\nreader: csv\ndelimiter: \"\\t\"\nheader: true\nlabel: clicked\n"
        "fields:\n"
        "  - {name: age, type: numeric}\n"
        "  - {name: country, type: categorical, threshold: 0}\n"
        "  - {name: tags, type: sequence, separator: '|', max_len: 4, threshold: 0}\n"
    )
    for name, n in (("clicks.tsv", 200), ("test.tsv", 50)):
        lines = ["clicked\tage\tcountry\ttags"]
        lines += [
            f"{rng.randint(0, 1)}\t{rng.randint(0, 90)}\t{rng.choice(['de', 'fr', 'us'])}\t"
            + "|".join(rng.sample(["a", "b", "c", "d", "e"], rng.randint(0, 3)))
            for _ in range(n)
        ]
        (cwd / name).write_text("\n".join(lines) + "\n")


def _toy_prepared_criteo(cwd: Path) -> None:
    """``prepared/criteo``: a toy Criteo file through `polyzoo recsys prepare` (the block trains from it)."""
    _toy_criteo(cwd / "train.txt", rows=3000)
    subprocess.run(
        ["polyzoo", "recsys", "prepare", "train.txt", "--out", "prepared/criteo"], cwd=cwd, check=True, env=_ENV
    )


def _toy_cmt_scenes(cwd: Path) -> None:
    """``data/cmt_toy``: the toy scenes the CMT several-process line trains on."""
    subprocess.run(["polyzoo", "detection", "toy-data", "data/cmt_toy"], cwd=cwd, check=True, env=_ENV)


# (text in a block, toy data the block needs but does not make itself)
SETUP = (
    ("recsys prepare train.txt", lambda cwd: _toy_criteo(cwd / "train.txt")),
    ("recsys prepare train.csv --data-format avazu", _toy_recsys_inputs),
    ("recsys train prepared/criteo", _toy_prepared_criteo),
    ("--launcher pytorch --cfg-options data_root=data/cmt_toy/", _toy_cmt_scenes),
    ('VideoDataset("train.txt", root="videos"', _toy_videos),
    ("music convert some.mid other.txt", _music_files),
)
_ENV: dict = {}


def _layout(tmp: Path) -> tuple[Path, dict]:
    from polyzoo.shared.paths import shared_data_dir

    cwd = tmp / "clone"
    cwd.mkdir()
    for name in ("tools", "packages"):
        (cwd / name).symlink_to(REPO / name)
    data = shared_data_dir()
    if data is not None and Path(data).is_dir():
        (tmp / "shared").mkdir()
        (tmp / "shared" / "data").symlink_to(Path(data).resolve())
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(UV_SHIM)
    (bin_dir / "uv").chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("POLYZOO_SHARED_DATA", None)
    return cwd, env


def _runnable_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang == "python" or any(skip_reason(c) is None for c in shell_commands(b))]


def _report_without_errors(stdout: str) -> bool:
    """``polyzoo reproduce`` wrote its report and no check raised (it exits 1 when a check FAILs)."""
    lines = stdout.splitlines()
    return any("REPORT.md" in line for line in lines) and not any(line.startswith("ERROR") for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("block", _runnable_blocks(), ids=lambda b: b.id)
def test_readme_block_runs(block: Block, tmp_path: Path):
    cwd, env = _layout(tmp_path)
    _ENV.clear()
    _ENV.update(env)
    text = block.text if block.lang == "python" else "\n".join(shell_commands(block))
    if "../shared/data" in text and not (tmp_path / "shared" / "data").is_dir():
        pytest.skip("needs ../shared/data (the real data beside the clone)")
    for needle, make in SETUP:
        if needle in block.text:
            make(cwd)
    if block.lang == "python":
        script = cwd / "readme_block.py"
        script.write_text(block.text)
        runs = [[sys.executable, str(script)]]
        shown = [f"python block {block.id}"]
    else:
        cmds = [as_run(c) for c in shell_commands(block) if skip_reason(c) is None]
        runs = [["bash", "-c", c] for c in cmds]
        shown = cmds
    for argv, cmd in zip(runs, shown, strict=True):
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        if "polyzoo reproduce" in cmd and proc.returncode == 1 and _report_without_errors(proc.stdout + proc.stderr):
            continue  # a FAIL verdict is a result the report explains, not a command that did not run
        assert proc.returncode == 0, (
            f"{block.id}: `{cmd}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
            f"{proc.stderr[-6000:]}"
        )

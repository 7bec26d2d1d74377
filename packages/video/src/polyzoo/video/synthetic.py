"""Synthetic labelled clips whose class is defined by temporal order, written to mp4 and read back with decord.

A real handwritten digit (scikit-learn's 8×8 ``load_digits``, upscaled) on a dark canvas:

====  ====================  ==========================================================
 0    ``left_to_right``      the digit moves from the left edge to the right edge
 1    ``right_to_left``      the same motion played backwards
 2    ``appearing``          the digit fades in at a fixed place
 3    ``disappearing``       the same fade played backwards
====  ====================  ==========================================================

Each clip has T "steps", each shown for ``hold`` consecutive frames (F = T·hold frames), so TSN sampling of
T segments sees exactly one frame of every step, wherever its random offset falls. Classes 0/1 and 2/3 are
time reversals of each other: their clips contain the same set of frames. Any head that averages over time
(GAP with average consensus) is order-invariant and can at best separate motion from fading: 50 % accuracy
(ground truth by construction). A temporally-aware head (TCP's attention and temporal convolution) can reach
100 %. Pixel noise (σ = ``noise``) is drawn per frame; clips are encoded with libx264 (through the static
ffmpeg of ``imageio-ffmpeg``) at high quality.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from polyzoo.shared.datasets import digits
from polyzoo.shared.io import atomic_path, write_json_atomic

__all__ = ["CLASS_NAMES", "SyntheticConfig", "make_clip", "make_dataset", "write_video"]

log = logging.getLogger(__name__)

CLASS_NAMES = ("left_to_right", "right_to_left", "appearing", "disappearing")


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, crf: int = 10) -> Path:
    """Encode (F, H, W, 3) uint8 RGB frames to an H.264 mp4 (even H, W), atomically (temp file + rename).

    libx264 with the default GOP (one keyframe, then P/B frames): random access must decode forward from the
    keyframe, which makes these clips a test of frame-exact seeking. Decoders return exactly F frames.
    """
    import imageio_ffmpeg

    path = Path(path)
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_video({path}): H.264 yuv420p needs even height and width, got {h}×{w}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w, h),
        fps=fps,
        codec="libx264",
        quality=None,
        macro_block_size=1,
        output_params=["-crf", str(crf), "-preset", "ultrafast"],
        ffmpeg_log_level="error",
    )
    try:
        writer.send(None)  # start ffmpeg
        for frame in frames:
            writer.send(frame)
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclasses.dataclass
class SyntheticConfig:
    """Clip generator settings (``steps`` = T, the number of distinct moments; F = steps·hold frames)."""

    size: int = 32
    digit_scale: int = 2
    steps: int = 8
    hold: int = 2
    noise: float = 6.0
    fps: int = 10


def make_clip(digit: np.ndarray, label: int, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """One clip (F, size, size, 3) uint8 of ``digit`` (8×8 in [0, 1]) for class ``label``."""
    if label not in range(len(CLASS_NAMES)):
        raise ValueError(f"make_clip: label must be in 0..{len(CLASS_NAMES) - 1}, got {label}")
    img = np.kron(digit, np.ones((cfg.digit_scale, cfg.digit_scale), np.float32))
    d, s, t = img.shape[0], cfg.size, cfg.steps
    if d > s:
        raise ValueError(f"make_clip: a {d}-pixel digit does not fit a {s}-pixel canvas")
    y0 = int(rng.integers(0, s - d + 1))
    if label in (0, 1):  # motion: x positions across the canvas
        xs = np.round(np.linspace(0, s - d, t)).astype(int)
        gains = np.ones(t)
        xs = xs if label == 0 else xs[::-1]
    else:  # fade at a fixed place
        xs = np.full(t, int(rng.integers(0, s - d + 1)))
        gains = np.linspace(0.15, 1.0, t)
        gains = gains if label == 2 else gains[::-1]
    background = float(rng.uniform(10, 40))
    frames = np.empty((t * cfg.hold, s, s), np.float32)
    for k in range(t):
        canvas = np.full((s, s), background, np.float32)
        canvas[y0 : y0 + d, xs[k] : xs[k] + d] += 200.0 * gains[k] * img
        for j in range(cfg.hold):
            frames[k * cfg.hold + j] = canvas + rng.normal(0, cfg.noise, (s, s)) if cfg.noise else canvas
    gray = np.clip(np.round(frames), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def make_dataset(
    out_dir: str | Path,
    per_class: dict[str, int] | None = None,
    config: SyntheticConfig | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write clips and mmaction2-style annotation lists: ``<out>/<split>/*.mp4``, ``<out>/<split>.txt``
    (``<split>/clip_00000.mp4 label``), ``<out>/label_map.txt``. Splits use disjoint digit images.

    Skips the work when ``<out>/meta.json`` records the same settings. Returns {split: annotation file}.
    """
    out = Path(out_dir)
    per_class = dict(per_class or {"train": 48, "val": 24})
    cfg = dataclasses.replace(config or SyntheticConfig())
    meta = {"per_class": per_class, "config": dataclasses.asdict(cfg), "seed": seed, "classes": list(CLASS_NAMES)}
    lists = {split: out / f"{split}.txt" for split in per_class}
    meta_path = out / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta and all(p.is_file() for p in lists.values()):
        return lists
    images, _ = digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    chunks = np.array_split(order, len(per_class))
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_map.txt").write_text("".join(n + "\n" for n in CLASS_NAMES))
    # clips are drawn in order from one generator (deterministic); ffmpeg encodes them two at a time
    with ThreadPoolExecutor(max_workers=2) as pool_ex:
        for (split, n), pool in zip(per_class.items(), chunks, strict=True):
            lines, jobs = [], []
            for i in range(n * len(CLASS_NAMES)):
                label = i % len(CLASS_NAMES)
                digit = images[pool[int(rng.integers(len(pool)))]]
                rel = f"{split}/clip_{i:05d}.mp4"
                jobs.append(pool_ex.submit(write_video, out / rel, make_clip(digit, label, cfg, rng), cfg.fps))
                lines.append(f"{rel} {label}\n")
            for job in jobs:
                job.result()
            with atomic_path(lists[split]) as tmp:
                tmp.write_text("".join(lines))
            log.info("wrote %d synthetic clips to %s", len(lines), out / split)
    write_json_atomic(meta_path, meta)
    return lists

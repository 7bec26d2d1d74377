"""A decord clip pipeline in the shape of mmaction2's: annotation list → TSN segment sampling → frame-exact
decoding straight to torch uint8 tensors → group transforms (multi-scale crop, flip, resize, crops).

References: TSN (Wang et al., ECCV 2016) segment sampling; mmaction2 (``SampleFrames``, ``DecordInit``,
``DecordDecode``, ``MultiScaleCrop``, ``ThreeCrop``, ``VideoDataset`` with ``ann_file`` lines ``path label``);
TSM/TCP ``GroupMultiScaleCrop`` (scales 1, .875, .75, .66; fixed corner/centre offsets).

Conventions
-----------
- Annotation list: one ``relative/path.mp4 label`` per line (whitespace separated; blank lines and lines
  starting with ``#`` ignored), paths relative to ``root``.
- Sampling of T segments from F frames follows one of two **protocols** (:func:`sample_indices`,
  ``ClipConfig.protocol``), each a transcription of official code:

  ``"tcp"`` (default; TCP repo ``ops/dataset.py::TSNDataSet`` and ``test_models.py``, what TCP's published numbers
  mean): training takes one frame at a uniform integer offset inside each segment of integer length F // T, so
  the last F mod T frames are never sampled, and a video with F < T gives frame 0 for every segment
  (deterministic); training videos with fewer than 3 frames are dropped (``_parse_list``). Testing with one clip
  takes ``int(F/T·(t + ½))`` (``_get_test_indices``); with 10 clips (``--ten_clips_sample``) clip j takes
  ``int(F/T/10·j + F/T·t)`` for j = 1…9, then j = 0. Views (clips × crops) are fused by the **maximum of the
  softmax** (``--softmax``, as every TCP K400 test script runs it). Other clip counts raise ``ValueError``.

  ``"mmaction2"`` (mmaction2 1.x ``SampleFrames(clip_len=1, num_clips=T)``, the TSN/TSM configs): training as
  ``_get_train_clips`` with ``keep_tail_frames=False`` (integer segments as TCP, but F < T gives
  ``round(t·F/T) mod F``, numpy's round-half-even, then ``out_of_bound_opt='loop'``); ``keep_tail_frames=True``
  samples ``int(t·F/T + U(0, F/T))`` instead (every frame reachable; polyzoo's sampler before the protocols
  existed). Testing with one clip takes the segment centres, with two clips ``twice_sample`` (the centres, then
  the segment starts). Views are fused by averaging softmax probabilities (``average_clips='prob'``, the TSN/TSM
  configs) or logits (``'score'``). Other clip counts raise ``ValueError``.

  The view fusion lives with the test-time code (:func:`polyzoo.video.train.fuse_views`,
  :data:`polyzoo.video.train.PROTOCOL_FUSION`).
- Clips are ``torch.uint8`` tensors ``(T, 3, H, W)`` (training) or ``(V, T, 3, H, W)`` with V = clips × crops
  (testing); :func:`normalize` turns a batch into float ``(…, 3, H, W)`` with ImageNet mean/std (do it in
  the training step, so that worker processes ship 4× fewer bytes).
- A missing or undecodable file raises :class:`VideoReadError` naming the file and its annotation line.
  With ``skip_bad=True`` such a sample is logged, counted (``dataset.skipped``) and replaced by the next
  readable one.

Departures from the official code (both protocols): videos are decoded with decord from video files (the
official code reads extracted JPEG frames, 1-based ``img_{:05d}.jpg``; polyzoo's indices are 0-based frame
numbers); random offsets come from a numpy ``Generator`` seeded from torch (the official code uses numpy's global
RNG), the same distribution. TCP's ``main.py`` validates during training with ``_get_val_indices`` (all zeros when
F ≤ T), its test script with ``_get_test_indices``; polyzoo's in-training evaluation uses the test-script indices.
TCP drops videos with < 3 frames from the list before an epoch; polyzoo learns a video's length only when it opens
it, so a short training video met during an epoch is replaced by the next usable one (``dataset.excluded``);
:meth:`VideoDataset.drop_short` removes them up front exactly as the official list filter (it opens every file).
The official test script (one weights file, ``remove_missing``) also drops them from the test list: call
``drop_short`` on a test set for the official denominator.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from polyzoo.shared.io import read_text

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROTOCOLS",
    "PROTOCOL_CLIPS",
    "TCP_MIN_FRAMES",
    "ClipConfig",
    "ShortVideoError",
    "VideoDataset",
    "VideoReadError",
    "VideoSample",
    "decode_frames",
    "multi_scale_crop_box",
    "normalize",
    "open_video",
    "read_annotations",
    "read_frames",
    "read_label_map",
    "sample_indices",
    "transform_clip",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VideoReadError(ValueError):
    """A video file is missing or cannot be decoded (the message names the file)."""


@dataclasses.dataclass(frozen=True)
class VideoSample:
    path: Path
    label: int
    line: int = 0  # 1-based line in the annotation file (0: not from a file)

    def line_note(self) -> str:
        return f" (annotation line {self.line})" if self.line else ""


class ShortVideoError(VideoReadError):
    """A video has fewer frames than the protocol accepts (TCP: 3); such training videos are dropped."""


PROTOCOLS = ("tcp", "mmaction2")
"""Sampling/testing protocols (see the module docstring)."""
PROTOCOL_CLIPS = {"tcp": (1, 10), "mmaction2": (1, 2)}
"""Test clip counts each protocol defines (TCP: single clip or ``ten_clips_sample``; mmaction2's 2D recognizers:
single clip or ``twice_sample``)."""
TCP_MIN_FRAMES = 3
"""TCP's ``_parse_list`` keeps only videos with at least this many frames."""


def read_annotations(ann_file: str | Path, root: str | Path | None = None) -> list[VideoSample]:
    """Parse an mmaction2-style annotation list (``relative/path.mp4 label`` per line).

    Args:
        ann_file: the list.
        root: folder the paths are relative to (default: the list's folder).
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation list not found: {ann_file}")
    root = Path(root) if root is not None else ann_file.parent
    samples = []
    for i, raw in enumerate(read_text(ann_file).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{ann_file}:{i}: expected 'relative/path.mp4 label' (an integer label), got {raw!r}")
        label = int(parts[1])
        if label < 0:
            raise ValueError(f"{ann_file}:{i}: label must be >= 0, got {label}")
        samples.append(VideoSample(root / parts[0], label, i))
    if not samples:
        raise ValueError(f"{ann_file}: no samples (expected lines 'relative/path.mp4 label')")
    return samples


def read_label_map(path: str | Path) -> list[str]:
    """Class names, one per line in index order (mmaction2's ``label_map_k400.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    names = [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"{path}: empty label map (expected one class name per line)")
    return names


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"video sampling protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _check_clips(protocol: str, num_clips: int) -> None:
    if num_clips not in PROTOCOL_CLIPS[protocol]:
        allowed = " or ".join(str(v) for v in PROTOCOL_CLIPS[protocol])
        raise ValueError(
            f"protocol {protocol!r} defines {allowed} test clips, got num_clips={num_clips}"
            + (" (use protocol='mmaction2' for 2 clips)" if protocol == "tcp" and num_clips == 2 else "")
        )


def sample_indices(
    num_frames: int,
    num_segments: int,
    mode: Literal["train", "test"] = "train",
    num_clips: int = 1,
    generator: np.random.Generator | None = None,
    protocol: str = "tcp",
    keep_tail_frames: bool = False,
) -> np.ndarray:
    """TSN segment sampling under ``protocol`` (see the module docstring for the official code each follows).

    Args:
        num_frames: F, frames in the video (≥ 1).
        num_segments: T.
        mode: "train": a random offset in each segment; "test": ``num_clips`` fixed offsets.
        num_clips: V test clips (ignored in training): 1 or 10 for "tcp", 1 or 2 for "mmaction2".
        generator: numpy generator for the training offsets.
        protocol: "tcp" or "mmaction2".
        keep_tail_frames: mmaction2's ``keep_tail_frames`` (training only; "mmaction2" only).

    Returns:
        int64 indices (T,) for training, (V, T) for testing; in [0, F). Shorter videos repeat frames.
    """
    _check_protocol(protocol)
    if num_frames < 1:
        raise ValueError(f"sample_indices: the video has no frames (num_frames={num_frames})")
    if num_segments < 1 or num_clips < 1:
        raise ValueError(f"sample_indices: num_segments and num_clips must be >= 1, got {num_segments}, {num_clips}")
    if keep_tail_frames and protocol != "mmaction2":
        raise ValueError("sample_indices: keep_tail_frames is an option of protocol 'mmaction2' only")
    t = np.arange(num_segments)
    if mode == "train":
        rng = generator if generator is not None else np.random.default_rng()
        if keep_tail_frames:  # SampleFrames._get_train_clips, keep_tail_frames=True (F > 0 always here)
            avg = num_frames / float(num_segments)
            return (t * avg + rng.uniform(0, avg, num_segments)).astype(np.int64) % num_frames
        seg = num_frames // num_segments
        if seg > 0:  # both protocols: integer segments, the last F mod T frames are never reached
            return (t * seg + rng.integers(seg, size=num_segments)).astype(np.int64)
        # F < T. (Both official functions have a branch "F > T: sorted random offsets" before this point, which
        # F // T == 0 never reaches with one frame per segment.)
        if protocol == "tcp":  # _sample_indices: offsets = zeros
            return np.zeros(num_segments, dtype=np.int64)
        ratio = (num_frames - 1 + 1.0) / num_segments  # _get_train_clips, avg_interval == 0 branch
        return np.around(t * ratio).astype(np.int64) % num_frames  # out_of_bound_opt='loop'
    if mode != "test":
        raise ValueError(f"sample_indices: mode must be 'train' or 'test', got {mode!r}")
    _check_clips(protocol, num_clips)
    tick = num_frames / float(num_segments)
    if protocol == "tcp":  # _get_test_indices
        if num_clips == 1:
            offsets = (tick / 2.0 + tick * t)[None]
        else:  # ten_clips_sample: j/10 of a segment for j = 1..9, then 0
            j = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0])[:, None]
            offsets = tick / 10.0 * j + tick * t[None]
        return offsets.astype(np.int64)
    base = t * tick  # SampleFrames._get_test_clips, clip_len == 1 (2D recognizer)
    offsets = base + tick / 2.0
    clips = np.stack([offsets, base]) if num_clips == 2 else offsets[None]  # twice_sample: centres, then starts
    return np.mod(clips, num_frames).astype(np.int64)


def open_video(path: str | Path, num_threads: int = 1):
    """A ``decord.VideoReader`` on ``path``; raises :class:`VideoReadError` naming the file when it is missing or
    cannot be opened."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: video file not found")
    import decord

    try:
        return decord.VideoReader(str(path), num_threads=num_threads)
    except Exception as e:  # decord raises RuntimeError / DECORDError with C++ context
        raise VideoReadError(f"{path}: cannot open video ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def decode_frames(reader, indices: Sequence[int] | np.ndarray, path: str | Path = "<video>") -> torch.Tensor:
    """Decode the given frames from an open decord reader: (len(indices), H, W, 3) uint8 tensor (zero-copy via
    DLPack). Frame-exact: decord seeks to the previous keyframe and decodes forward. Each distinct frame is
    decoded once, in increasing order."""
    from decord.bridge.torchdl import to_torch

    n = len(reader)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{path}: no frame indices requested")
    if idx.min() < 0 or idx.max() >= n:
        raise VideoReadError(f"{path}: frame indices {idx.min()}..{idx.max()} outside the video's {n} frames")
    order = np.unique(idx)
    try:
        frames = to_torch(reader.get_batch(order.tolist()))
    except Exception as e:
        raise VideoReadError(f"{path}: cannot decode frames ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    return frames[torch.from_numpy(np.searchsorted(order, idx))]


def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray, num_threads: int = 1) -> torch.Tensor:
    """Open ``path`` with decord and decode the given frames: (len(indices), H, W, 3) uint8.

    Raises:
        VideoReadError: the file is missing, unreadable, or an index is out of range.
    """
    return decode_frames(open_video(path, num_threads), indices, path)


def num_video_frames(path: str | Path) -> int:
    """Frame count of a video (decord), raising :class:`VideoReadError` naming the file."""
    return len(open_video(path))


# ------------------------------------------------------------------------------------------- transforms
def multi_scale_crop_box(
    height: int,
    width: int,
    generator: np.random.Generator,
    scales: Sequence[float] = (1, 0.875, 0.75, 0.66),
    max_distort: int = 1,
    more_fix_crop: bool = True,
) -> tuple[int, int, int, int]:
    """TSN's multi-scale crop: a crop (top, left, h, w) whose sides are the short side times one of ``scales``
    (aspect pairs at most ``max_distort`` scale steps apart), at one of the fixed corner/centre offsets."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    pairs = [(sh, sw) for i, sh in enumerate(sizes) for j, sw in enumerate(sizes) if abs(i - j) <= max_distort]
    ch, cw = pairs[int(generator.integers(len(pairs)))]
    sh, sw = (height - ch) // 4, (width - cw) // 4
    offsets = [(0, 0), (0, 4 * sw), (4 * sh, 0), (4 * sh, 4 * sw), (2 * sh, 2 * sw)]
    if more_fix_crop:
        offsets += [(2 * sh, 0), (2 * sh, 4 * sw), (4 * sh, 2 * sw), (0, 2 * sw)]
        offsets += [(sh, sw), (sh, 3 * sw), (3 * sh, sw), (3 * sh, 3 * sw)]
    top, left = offsets[int(generator.integers(len(offsets)))]
    return top, left, ch, cw


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, H, W) uint8 → (T, 3, h, w) uint8, bilinear (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == size:
        return x
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def _short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    return (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)


@dataclasses.dataclass
class ClipConfig:
    """Sampling and transforms of :class:`VideoDataset`.

    Training: multi-scale crop (``scales``) of the decoded frames → resize to ``input_size`` → random
    horizontal flip (``flip``; turn it off when the label depends on left/right). Testing: resize the short
    side to ``scale_size`` → ``num_crops`` crops of ``input_size`` (1: centre; 3: the two ends and the centre
    along the long side, mmaction2's ThreeCrop) for each of ``num_clips`` clips.

    ``protocol`` chooses the frame sampling, the test clip offsets and the default view fusion: "tcp" (default,
    TCP's official code; ``num_clips`` 1 or 10) or "mmaction2" (``SampleFrames``; ``num_clips`` 1 or 2, with
    ``keep_tail_frames`` its training option); see the module docstring. The default is TCP's because this package
    reproduces TCP and its CLI defaults are TCP's K400 recipe; "mmaction2" is the ecosystem's convention.
    """

    num_segments: int = 8
    input_size: int = 224
    scale_size: int = 256
    scales: tuple[float, ...] = (1, 0.875, 0.75, 0.66)
    flip: bool = True
    num_clips: int = 1
    num_crops: int = 1
    protocol: str = "tcp"
    keep_tail_frames: bool = False

    def __post_init__(self) -> None:
        _check_protocol(self.protocol)
        _check_clips(self.protocol, self.num_clips)
        if self.keep_tail_frames and self.protocol != "mmaction2":
            raise ValueError("ClipConfig.keep_tail_frames is an option of protocol 'mmaction2' only")


def transform_clip(
    frames: torch.Tensor, cfg: ClipConfig, mode: Literal["train", "test"], generator: np.random.Generator | None
) -> torch.Tensor:
    """(T·V, H, W, 3) uint8 decoded frames → (T, 3, s, s) (train) or (V·crops, T, 3, s, s) (test), uint8."""
    x = frames.permute(0, 3, 1, 2)  # (·, 3, H, W)
    s = cfg.input_size
    if mode == "train":
        rng = generator if generator is not None else np.random.default_rng()
        top, left, ch, cw = multi_scale_crop_box(x.shape[-2], x.shape[-1], rng, cfg.scales)
        x = _resize(x[..., top : top + ch, left : left + cw], (s, s))
        if cfg.flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x.contiguous()
    x = _resize(x, _short_side_size(x.shape[-2], x.shape[-1], cfg.scale_size))
    h, w = x.shape[-2:]
    if h < s or w < s:
        x = _resize(x, _short_side_size(h, w, s))
        h, w = x.shape[-2:]
    if cfg.num_crops == 1:
        boxes = [((h - s) // 2, (w - s) // 2)]
    elif cfg.num_crops == 3 and w >= h:  # left, centre, right
        boxes = [((h - s) // 2, 0), ((h - s) // 2, (w - s) // 2), ((h - s) // 2, w - s)]
    elif cfg.num_crops == 3:  # top, centre, bottom
        boxes = [(0, (w - s) // 2), ((h - s) // 2, (w - s) // 2), (h - s, (w - s) // 2)]
    else:
        raise ValueError(f"ClipConfig.num_crops must be 1 or 3, got {cfg.num_crops}")
    clips = x.reshape(cfg.num_clips, cfg.num_segments, 3, h, w)
    views = [clips[:, :, :, t : t + s, l : l + s] for t, l in boxes]
    return torch.stack(views, dim=1).flatten(0, 1).contiguous()  # (clips·crops, T, 3, s, s)


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 (…, 3, H, W) → float32 normalized (…, 3, H, W)."""
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"normalize: expected (..., 3, H, W) frames, got shape {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255
    return (x.float() - m) / s


class VideoDataset(Dataset):
    """Clips with labels from an annotation list (or a list of :class:`VideoSample`), decoded with decord.

    ``dataset[i]`` → ``(clip, label)``: clip uint8 (T, 3, s, s) in "train" mode, (V, T, 3, s, s) in "test" mode
    (V = ``num_clips`` × ``num_crops``). Training offsets and crops are random, drawn from torch's RNG (one
    draw per sample), so runs seeded through torch are reproducible and resume exactly.

    Args:
        samples: annotation list path or samples.
        root: folder the list's paths are relative to (default: the list's folder).
        config: :class:`ClipConfig`.
        mode: "train" or "test".
        skip_bad: log, count and replace unreadable samples instead of raising.
        num_threads: decord decoding threads per reader.
        cache_frames: decode every frame of a video on first use and keep it in memory (per process), for
            small datasets read many times (the quick reproduction); sampling then indexes the cache.
        min_frames: videos with fewer frames are dropped: in "train" mode a short video met while loading is
            replaced by the next usable one and recorded in ``dataset.excluded``; :meth:`drop_short` removes them
            up front in either mode. Default: 3 (TCP's list filter) under protocol "tcp", 1 (none) under
            "mmaction2".
    """

    def __init__(
        self,
        samples: str | Path | Sequence[VideoSample],
        root: str | Path | None = None,
        config: ClipConfig | None = None,
        mode: Literal["train", "test"] = "train",
        skip_bad: bool = False,
        num_threads: int = 1,
        cache_frames: bool = False,
        min_frames: int | None = None,
    ):
        if mode not in ("train", "test"):
            raise ValueError(f"VideoDataset: mode must be 'train' or 'test', got {mode!r}")
        self.samples = read_annotations(samples, root) if isinstance(samples, str | Path) else list(samples)
        if not self.samples:
            raise ValueError("VideoDataset: no samples")
        self.config = dataclasses.replace(config or ClipConfig())
        self.mode, self.skip_bad, self.num_threads = mode, skip_bad, num_threads
        self.cache_frames = cache_frames
        self._cache: dict[int, torch.Tensor] = {}
        self.skipped: dict[str, str] = {}  # path -> reason (in this process)
        self.min_frames = (TCP_MIN_FRAMES if self.config.protocol == "tcp" else 1) if min_frames is None else min_frames
        self.excluded: dict[str, str] = {}  # path -> reason: training videos shorter than min_frames

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    @staticmethod
    def _generator() -> np.random.Generator:
        # one draw from torch's RNG per sample: reproducible under torch.manual_seed, distinct per DataLoader
        # worker, and restored with torch's RNG state when a run resumes
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def load(self, i: int) -> torch.Tensor:
        """The clip of sample ``i`` (raises :class:`VideoReadError` naming the file)."""
        sample, cfg = self.samples[i], self.config
        rng = self._generator() if self.mode == "train" else None
        try:
            cached = self._cache.get(i) if self.cache_frames else None
            reader = open_video(sample.path, self.num_threads) if cached is None else None
            n = len(reader) if cached is None else cached.shape[0]
            if n < 1:
                raise VideoReadError(f"{sample.path}: the video has no frames")
            if rng is not None and n < self.min_frames:
                raise ShortVideoError(f"{sample.path}: {n} frames, fewer than {self.min_frames} (dropped in training)")
            if rng is not None:
                idx = sample_indices(
                    n,
                    cfg.num_segments,
                    "train",
                    generator=rng,
                    protocol=cfg.protocol,
                    keep_tail_frames=cfg.keep_tail_frames,
                )
            else:
                idx = sample_indices(
                    n, cfg.num_segments, "test", num_clips=cfg.num_clips, protocol=cfg.protocol
                ).reshape(-1)
            if self.cache_frames and cached is None:
                cached = self._cache[i] = decode_frames(reader, np.arange(n), sample.path)
            frames = cached[torch.from_numpy(idx)] if cached is not None else decode_frames(reader, idx, sample.path)
        except VideoReadError as e:
            raise type(e)(f"{e}{sample.line_note()}") from e
        return transform_clip(frames, cfg, self.mode, rng)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            key = str(self.samples[j].path)
            if key in self.skipped or key in self.excluded:
                continue
            try:
                return self.load(j), self.samples[j].label
            except ShortVideoError as e:
                self.excluded[key] = str(e)
                log.info("dropping short training video (%d so far): %s", len(self.excluded), e)
            except VideoReadError as e:
                if not self.skip_bad:
                    raise
                self.skipped[key] = str(e)
                log.warning("skipping unreadable video (%d skipped so far): %s", len(self.skipped), e)
        raise VideoReadError(f"VideoDataset: none of the {len(self.samples)} videos could be read")

    def drop_short(self) -> list[VideoSample]:
        """Remove the samples with fewer than ``min_frames`` frames (opens every file, headers only), as TCP's
        ``_parse_list`` does before training; returns the removed samples. Unreadable files are kept (they fail,
        or are skipped with ``skip_bad``, when loaded)."""
        keep, dropped = [], []
        for i, s in enumerate(self.samples):
            try:
                n = self._cache[i].shape[0] if i in self._cache else num_video_frames(s.path)
            except VideoReadError:
                n = self.min_frames
            (keep if n >= self.min_frames else dropped).append(s)
        if dropped:
            if not keep:
                raise ValueError(f"VideoDataset: every video has fewer than {self.min_frames} frames")
            self.samples, self._cache = keep, {}
            log.info("dropped %d videos with fewer than %d frames", len(dropped), self.min_frames)
        return dropped

    def scan(self) -> dict[str, str]:
        """Open every file once (headers only) and return {path: reason} for the unreadable ones; with
        ``skip_bad`` they are also recorded as skipped."""
        bad = {}
        for s in self.samples:
            try:
                if num_video_frames(s.path) < 1:
                    raise VideoReadError(f"{s.path}: the video has no frames")
            except VideoReadError as e:
                bad[str(s.path)] = f"{e}{s.line_note()}"
        if self.skip_bad:
            self.skipped.update(bad)
            for reason in bad.values():
                log.warning("skipping unreadable video: %s", reason)
        return bad

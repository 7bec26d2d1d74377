"""Clip loading for 8-segment TSN sampling: decord (polyzoo.video's loader) vs PyAV in the ways mmaction2's
``PyAVDecode`` reads clips, each checked to return exactly the requested frames.

Contenders (one clip = open the file + decode 8 frames at TSN training offsets, converted to RGB arrays):
- ``decord``: ``polyzoo.video.data.read_frames`` (decord ``get_batch``, frames straight to a torch uint8 tensor);
- ``pyav keyframe seek``: per segment, seek to the keyframe at or before the frame's timestamp and take the
  first decoded frame (mmaction2 ``PyAVDecode(mode='efficient')``): fast, but returns the keyframe;
- ``pyav accurate seek``: per segment, the same seek, then decode forward until the requested timestamp;
- ``pyav decode-all-then-pick``: decode from the start up to the last requested frame and pick
  (mmaction2 ``PyAVDecode(mode='accurate')``; only the picked frames are converted to RGB here);
- ``torchcodec``: ``VideoDecoder(seek_mode="exact").get_frames_at`` (PyTorch's own decoder; a dev dependency,
  it needs the system's FFmpeg 4–8 shared libraries, e.g. Debian 12's ``libavcodec59 libavformat59 libavutil57
  libswscale6 libswresample4 libavdevice59 libavfilter8``; without them its rows say why they are missing).

decord2 (the maintained fork, 3.4.0) installs the same ``decord`` module as decord 0.6.0, so the two cannot sit in
one environment; it was measured in a separate venv and rejected (see the package README): ``get_batch`` fails
with "DECORDArrayCopyFromTo: The size must exactly match" on H.264 clips of width 16, 32, 48, 96 or 144 px.

Videos: the real Kinetics clip in ../shared/data/video (280 frames, 340×256) and a longer clip encoded here
(600 frames, 340×256, libx264, default GOP of 250 frames). Frame-exactness: every returned frame is compared
with a full sequential PyAV decode; a frame counts as exact when it is closer (mean absolute difference) to
the requested reference frame than to any other, with MAD < 2 grey levels (decoders' RGB conversions differ
slightly). Needs PyAV: ``uv run --with av python tools/bench/run.py video`` (or the ``bench`` extra of
polyzoo-video).
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from polyzoo.shared.paths import shared_data_dir
from polyzoo.shared.timing import time_interleaved

REPO = Path(__file__).resolve().parents[2]


def _shared_video() -> Path | None:
    root = shared_data_dir(__file__) / "video"
    path = root / "kinetics_arm_wrestling.mp4"
    return path if path.is_file() else None


def _long_clip(folder: Path, frames: int = 600) -> Path:
    from polyzoo.video.synthetic import write_video

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (256, 680, 3), dtype=np.uint8)
    video = np.empty((frames, 256, 340, 3), np.uint8)
    for i in range(frames):
        video[i] = texture[:, i % 340 : i % 340 + 340]
        video[i, :16] = (i * 37) % 256  # a bar whose level changes every frame
    return write_video(folder / "long.mp4", video, fps=30, crf=18)


def _pyav_reference(path: Path) -> tuple[np.ndarray, list[int]]:
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return np.stack([f.to_ndarray(format="rgb24") for f in frames]), [f.pts for f in frames]


def _pyav_seek(path: Path, idx: list[int], accurate: bool) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        per_frame = 1 / (Fraction(s.average_rate) * s.time_base)  # pts units per frame
        for i in idx:
            target = start + round(i * per_frame)
            c.seek(target, any_frame=False, backward=True, stream=s)
            for frame in c.decode(s):
                if not accurate or frame.pts is None or frame.pts >= target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return out


def _pyav_decode_all(path: Path, idx: list[int]) -> list[np.ndarray]:
    import av

    wanted = set(idx)
    picked = {}
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in wanted:
                picked[i] = frame.to_ndarray(format="rgb24")
            if i >= max(idx):
                break
    return [picked[i] for i in idx]


def _decord(path: Path, idx: list[int]) -> list[np.ndarray]:
    from polyzoo.video.data import read_frames

    return list(read_frames(path, idx).numpy())


def _torchcodec_status() -> str | None:
    """None when torchcodec can decode here, else why not (not installed, or FFmpeg's libraries missing)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except ImportError:
        return "torchcodec is not installed"
    except (OSError, RuntimeError) as e:  # its core library loads FFmpeg's shared libraries at import
        return f"torchcodec cannot load FFmpeg's libraries ({type(e).__name__})"
    return None


def _torchcodec(path: Path, idx: list[int]) -> list[np.ndarray]:
    from torchcodec.decoders import VideoDecoder

    frames = VideoDecoder(str(path), seek_mode="exact").get_frames_at(idx).data  # (N, C, H, W) uint8
    return list(frames.permute(0, 2, 3, 1).numpy())


def _exact(frames: list[np.ndarray], idx: list[int], ref: np.ndarray) -> int:
    ok = 0
    flat = ref.reshape(len(ref), -1).astype(np.int16)
    for frame, i in zip(frames, idx, strict=True):
        mad = np.abs(flat - frame.reshape(1, -1).astype(np.int16)).mean(1)
        ok += int(mad[i] <= mad.min() + 1e-9 and mad[i] < 2.0)
    return ok


def run(quick: bool = False) -> str:
    try:
        import av  # noqa: F401
    except ImportError:
        return "PyAV is not installed: run `uv run --with av python tools/bench/run.py video`."
    from polyzoo.video.data import num_video_frames, sample_indices

    torchcodec_missing = _torchcodec_status()
    repeats = 3 if quick else 10
    n_sets = 4 if quick else 10
    lines = [
        "| video | loader | clips/s | vs decord | exact frames |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        real = _shared_video()
        if real is not None:
            videos["Kinetics clip (280 f)"] = real
        videos["encoded clip (600 f)"] = _long_clip(Path(tmp))
        for label, path in videos.items():
            ref, _ = _pyav_reference(path)
            n = min(len(ref), num_video_frames(path))
            rng = np.random.default_rng(0)
            index_sets = [sample_indices(n, 8, "train", generator=rng).tolist() for _ in range(n_sets)]
            loaders = {
                "decord (ours)": lambda p, i: _decord(p, i),
                "pyav keyframe seek (mmaction2 efficient)": lambda p, i: _pyav_seek(p, i, accurate=False),
                "pyav accurate seek": lambda p, i: _pyav_seek(p, i, accurate=True),
                "pyav decode-all-then-pick (mmaction2 accurate)": _pyav_decode_all,
            }
            if torchcodec_missing is None:
                loaders["torchcodec (exact seek)"] = _torchcodec
            else:
                lines.append(f"| {label} | torchcodec | - | - | {torchcodec_missing} |")
            exact = {name: sum(_exact(fn(path, s), s, ref) for s in index_sets) for name, fn in loaders.items()}

            def over_sets(fn, path=path, index_sets=index_sets):
                return lambda: [fn(path, s) for s in index_sets]

            times = time_interleaved({k: over_sets(fn) for k, fn in loaders.items()}, repeats=repeats, warmup=1)
            base = times["decord (ours)"]
            for name in loaders:
                clips_s = len(index_sets) / times[name]
                lines.append(
                    f"| {label} | {name} | {clips_s:.1f} | {base / times[name]:.2f}× | "
                    f"{exact[name]}/{8 * len(index_sets)} |"
                )
    lines.append("")
    lines.append(
        f"{n_sets} random 8-segment index sets per video, each clip opened afresh; medians of {repeats} "
        "interleaved rounds. 'vs decord' > 1 means faster than decord."
    )
    return "\n".join(lines)

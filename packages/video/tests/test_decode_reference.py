"""decord's frame-exact random access against an independent decoder: PyAV decoding every frame in order.

The clip here is encoded with libx264 B-frames (``bf=3``, GOP 12, several keyframes), checked to really contain
B-frames by PyAV's ``pict_type``; the real Kinetics clip of ../shared/data/video has 127 B-frames. Frames are
asked for out of order, and one at a time on one reader (each request a seek), so a decoder that returns the
frame in decode order instead of presentation order, or the keyframe before the asked one, fails.
"""

from __future__ import annotations

from pathlib import Path

import av  # a dev dependency of the workspace
import numpy as np
import pytest

from polyzoo.video.data import decode_frames, open_video, read_frames


def _pyav_decode_all(path: Path) -> tuple[np.ndarray, list[str]]:
    """Every frame in presentation order (PyAV's demux + decode), RGB uint8, and each frame's picture type."""
    with av.open(str(path)) as container:
        frames = [(f.to_ndarray(format="rgb24"), f.pict_type) for f in container.decode(video=0)]
    return np.stack([a for a, _ in frames]), [av.video.frame.PictureType(int(t)).name for _, t in frames]


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory) -> Path:
    """40 frames of 64×96 noise panned 3 px per frame (every frame distinct), x264 with up to 3 B-frames."""
    path = tmp_path_factory.mktemp("bframes") / "bframes.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"bf": "3", "g": "12", "crf": "18", "preset": "medium"}
        for i in range(40):
            img = np.roll(base, 3 * i, axis=1)
            img[:8, :8] = 6 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _check_against_pyav(path: Path, indices: list[int]) -> None:
    ref, _ = _pyav_decode_all(path)
    assert all(not np.array_equal(ref[i], ref[i + 1]) for i in indices if i + 1 < len(ref))  # off-by-one visible
    got = read_frames(path, indices).numpy()
    for k, i in enumerate(indices):
        assert np.array_equal(got[k], ref[i]), f"frame {i} (asked at position {k}) differs from PyAV's"
    reader = open_video(path)
    assert len(reader) == len(ref)
    for i in indices:  # one seek per request, in the given (non-monotone) order
        assert np.array_equal(decode_frames(reader, [i], path).numpy()[0], ref[i]), f"frame {i} after a seek"


def test_encoded_clip_really_has_b_frames(bframe_clip):
    _, types = _pyav_decode_all(bframe_clip)
    kinds = types
    assert len(kinds) == 40
    assert kinds.count("B") >= 10 and kinds.count("I") >= 2, kinds


def test_decord_random_access_equals_pyav_decode_all_on_b_frames(bframe_clip):
    _, types = _pyav_decode_all(bframe_clip)
    b_frames = [i for i, t in enumerate(types) if t == "B"]
    indices = [39, 5, b_frames[0], 17, b_frames[-1], 2, 30, 0, 11, 12, 13, b_frames[len(b_frames) // 2], 24]
    _check_against_pyav(bframe_clip, indices)


def test_decord_equals_pyav_on_the_real_kinetics_clip(shared_video_dir):
    path = shared_video_dir / "kinetics_arm_wrestling.mp4"
    _, types = _pyav_decode_all(path)
    b_frames = [i for i, t in enumerate(types) if t == "B"]
    assert len(b_frames) > 100  # 127 in the file as shipped
    n = len(types)
    indices = [n - 1, 5, b_frames[3], 150, 17, b_frames[-1], 2, 0, 99, b_frames[60], 200, 201]
    _check_against_pyav(path, indices)

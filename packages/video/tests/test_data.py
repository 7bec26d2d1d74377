"""The decord clip pipeline: annotation lists, TSN sampling, frame-exact decoding, transforms, multi-view test,
errors naming the file, --skip-bad, workers; on clips encoded here and on the real clips in ../shared/data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from polyzoo.video.data import (
    ClipConfig,
    VideoDataset,
    VideoReadError,
    VideoSample,
    multi_scale_crop_box,
    normalize,
    read_annotations,
    read_frames,
    read_label_map,
    sample_indices,
)


def frame_index(frames: torch.Tensor) -> list[int]:
    """Inverse of the index clip's encoding (grey level = 8·index + 4)."""
    return [round((float(f.float().mean()) - 4) / 8) for f in frames]


def test_read_annotations(tmp_path):
    ann = tmp_path / "list.txt"
    ann.write_text("# comment\na/b.mp4 3\n\nc d.mp4 0\n")
    samples = read_annotations(ann, root=tmp_path / "videos")
    assert [(s.path, s.label, s.line) for s in samples] == [
        (tmp_path / "videos/a/b.mp4", 3, 2),
        (tmp_path / "videos/c d.mp4", 0, 4),
    ]
    ann.write_text("a.mp4 1\nb.mp4 x\n")
    with pytest.raises(ValueError, match=r"list.txt:2: expected 'relative/path.mp4 label'"):
        read_annotations(ann)
    with pytest.raises(FileNotFoundError, match=r"nothere\.txt"):
        read_annotations(tmp_path / "nothere.txt")


def test_tsn_sampling():
    # protocol-exact comparisons with the official code are in test_protocols.py
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sample_indices(100, 8, "train", generator=rng)  # default protocol "tcp": segments of 100 // 8 = 12
        assert idx.shape == (8,)
        assert np.all(idx >= np.arange(8) * 12) and np.all(idx < np.arange(8) * 12 + 12)
    assert sample_indices(80, 8, "test").tolist() == [[5, 15, 25, 35, 45, 55, 65, 75]]  # segment centres, (V=1, T)
    views = sample_indices(80, 8, "test", num_clips=2, protocol="mmaction2")  # twice_sample: centres, then starts
    assert views.shape == (2, 8) and views[0, 0] == 5 and views[1, 0] == 0
    assert sample_indices(3, 8, "test").tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]  # short video: repeats
    with pytest.raises(ValueError, match="no frames"):
        sample_indices(0, 8)


def test_decoding_is_frame_exact(index_clip):
    assert frame_index(read_frames(index_clip, range(30))) == list(range(30))
    wanted = [17, 3, 29, 3, 0, 12]  # unordered, repeated, across the GOP
    frames = read_frames(index_clip, wanted)
    assert frames.dtype == torch.uint8 and frames.shape == (6, 32, 64, 3)
    assert frame_index(frames) == wanted
    with pytest.raises(VideoReadError, match=r"index.mp4: frame indices 0..30 outside the video's 30 frames"):
        read_frames(index_clip, [0, 30])


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(VideoReadError, match=r"missing.mp4: video file not found"):
        read_frames(tmp_path / "missing.mp4", [0])
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00not a video" * 64)
    with pytest.raises(VideoReadError, match=r"corrupt.mp4: cannot open video"):
        read_frames(bad, [0])


def test_dataset_train_and_multiview_test(index_clip):
    cfg = ClipConfig(num_segments=5, input_size=24, scale_size=28, flip=True)
    train = VideoDataset([VideoSample(index_clip, 2)], config=cfg, mode="train")
    torch.manual_seed(0)
    clip, label = train[0]
    assert clip.shape == (5, 3, 24, 24) and clip.dtype == torch.uint8 and label == 2
    # one frame from each of the 5 segments of 6 frames
    assert [i // 6 for i in frame_index(clip)] == [0, 1, 2, 3, 4]
    torch.manual_seed(0)
    assert torch.equal(train[0][0], clip)  # reproducible under torch's seed
    cfg2 = ClipConfig(5, 24, 28, num_clips=2, num_crops=3, protocol="mmaction2")
    test = VideoDataset([VideoSample(index_clip, 2)], config=cfg2, mode="test")
    views, _ = test[0]
    assert views.shape == (6, 5, 3, 24, 24)  # 2 clips × 3 crops (twice_sample: segment centres, then starts)
    assert frame_index(views[0]) == [3, 9, 15, 21, 27] and frame_index(views[3]) == [0, 6, 12, 18, 24]


def test_multi_scale_crop_boxes_stay_inside():
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = multi_scale_crop_box(240, 320, rng)
        assert h in (240, 210, 180, 158) and w in (240, 210, 180, 158)
        assert top >= 0 and top + h <= 240 and left >= 0 and left + w <= 320


def test_normalize():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    y = normalize(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(
        y[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )


def test_skip_bad_logs_counts_and_replaces(index_clip, tmp_path, caplog):
    ann = tmp_path / "list.txt"
    ann.write_text(f"{index_clip} 1\nmissing.mp4 0\n")
    cfg = ClipConfig(num_segments=4, input_size=16, scale_size=16)
    strict = VideoDataset(ann, tmp_path, cfg, mode="test")
    with pytest.raises(VideoReadError, match=r"missing.mp4: video file not found \(annotation line 2\)"):
        strict[1]
    lenient = VideoDataset(ann, tmp_path, cfg, mode="test", skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="polyzoo.video.data"):
        clip, label = lenient[1]
    assert label == 1 and clip.shape == (1, 4, 3, 16, 16)
    assert list(lenient.skipped) == [str(tmp_path / "missing.mp4")]
    assert "skipping unreadable video (1 skipped so far)" in caplog.text
    assert set(lenient.scan()) == {str(tmp_path / "missing.mp4")}


def test_frame_cache_gives_the_same_clips(index_clip):
    cfg = ClipConfig(num_segments=4, input_size=16, scale_size=16, scales=(1.0,), flip=False)
    plain = VideoDataset([VideoSample(index_clip, 0)], config=cfg)
    cached = VideoDataset([VideoSample(index_clip, 0)], config=cfg, cache_frames=True)
    for seed in range(3):
        torch.manual_seed(seed)
        a = plain[0][0]
        torch.manual_seed(seed)
        assert torch.equal(a, cached[0][0])


def test_real_clips(shared_video_dir: Path):
    names = read_label_map(shared_video_dir / "label_map_k400.txt")
    assert len(names) == 400 and names[6] == "arm wrestling"
    samples = [
        VideoSample(shared_video_dir / "kinetics_arm_wrestling.mp4", 6),
        VideoSample(shared_video_dir / "test.mp4", 1),
        VideoSample(shared_video_dir / "test.avi", 2),
    ]
    cfg = ClipConfig(num_segments=8, input_size=64, scale_size=72)
    train = VideoDataset(samples, config=cfg, mode="train")
    loader = DataLoader(train, batch_size=3, num_workers=2)  # worker processes
    clips, labels = next(iter(loader))
    assert clips.shape == (3, 8, 3, 64, 64) and clips.dtype == torch.uint8
    assert labels.tolist() == [6, 1, 2]
    assert clips.float().std() > 10  # real content, not blank frames
    cfg2 = ClipConfig(8, 64, 72, num_clips=2, num_crops=3, protocol="mmaction2")
    test = VideoDataset(samples[:1], config=cfg2, mode="test")
    assert test[0][0].shape == (6, 8, 3, 64, 64)
    # decord agrees with itself across access orders on the real (B-frame) clip
    a = read_frames(samples[0].path, [200, 5, 120])
    b = read_frames(samples[0].path, [5, 120, 200])
    assert torch.equal(a[[1, 2, 0]], b)

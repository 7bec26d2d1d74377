"""The video sampling protocols against transcriptions of the official procedures, written here from the
official code's logic (TCP repo ``ops/dataset.py::TSNDataSet._sample_indices/_get_test_indices/_parse_list`` and
``test_models.py``; mmaction2 1.x ``SampleFrames._get_train_clips/_get_test_clips/transform`` and
``BaseHead.average_clip``), in plain Python loops; 0-based frame numbers (the official TSN lists add 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyzoo.video.data import ClipConfig, VideoDataset, VideoSample, sample_indices
from polyzoo.video.train import fuse_views, multiview_predict_fn


def index_frames(num_frames: int) -> np.ndarray:
    """(F, 32, 64, 3) frames whose grey level encodes the frame index (8·index + 4), as conftest's index clip."""
    levels = (np.arange(num_frames) * 8 + 4).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, 32, 64, 3)).copy()


def frame_index(frames: torch.Tensor) -> list[int]:
    return [round((float(f.float().mean()) - 4) / 8) for f in frames]


FRAMES = [*range(1, 41), 63, 64, 65, 127, 200, 257, 300, 319]
SEGMENTS = [1, 2, 3, 4, 5, 7, 8, 16]


class ScriptedRng:
    """Stands in for numpy's random draws with a fixed, known sequence (the same one the transcriptions get)."""

    def __init__(self, seed: int):
        self.state = seed

    def _next(self) -> float:
        self.state = (self.state * 1103515245 + 12345) % 2**31
        return self.state / 2**31

    def integers(self, high, size):  # numpy.random.randint(high, size=size)
        return np.array([int(self._next() * high) for _ in range(size)])

    def uniform(self, low, high, size):  # numpy.random.uniform(low, high, size)
        return np.array([low + (high - low) * self._next() for _ in range(size)])


# ------------------------------------------------------------------- transcriptions of the official code
def tcp_train(num_frames, num_segments, randint):
    """TCP ``_sample_indices`` (RGB, new_length 1, not dense), minus the final ``+ 1``."""
    average_duration = (num_frames - 1 + 1) // num_segments
    if average_duration > 0:
        r = randint(average_duration, num_segments)
        return [x * average_duration + int(r[x]) for x in range(num_segments)]
    if num_frames > num_segments:
        return sorted(int(v) for v in randint(num_frames - 1 + 1, num_segments))
    return [0] * num_segments


def tcp_test(num_frames, num_segments, ten_clips):
    """TCP ``_get_test_indices`` (not dense), minus the final ``+ 1``; clips in the official order."""
    tick = (num_frames - 1 + 1) / float(num_segments)
    if not ten_clips:
        return [[int(tick / 2.0 + tick * x) for x in range(num_segments)]]
    clips = [[int(tick / 10.0 * j + tick * x) for x in range(num_segments)] for j in range(1, 10)]
    return [*clips, [int(tick * x) for x in range(num_segments)]]


def mmaction2_train(num_frames, num_clips, randint, uniform, keep_tail_frames=False):
    """mmaction2 ``SampleFrames(clip_len=1, frame_interval=1, num_clips=T)._get_train_clips`` + 'loop'."""
    ori_clip_len = 1 * 1
    if keep_tail_frames:
        avg_interval = (num_frames - ori_clip_len + 1) / float(num_clips)
        if num_frames > ori_clip_len - 1:
            u = uniform(0, avg_interval, num_clips)
            offsets = [int(x * avg_interval + u[x]) for x in range(num_clips)]
        else:
            offsets = [0] * num_clips
    else:
        avg_interval = (num_frames - ori_clip_len + 1) // num_clips
        if avg_interval > 0:
            r = randint(avg_interval, num_clips)
            offsets = [x * avg_interval + int(r[x]) for x in range(num_clips)]
        elif num_frames > max(num_clips, ori_clip_len):
            offsets = sorted(int(v) for v in randint(num_frames - ori_clip_len + 1, num_clips))
        elif avg_interval == 0:
            ratio = (num_frames - ori_clip_len + 1.0) / num_clips
            offsets = [round(x * ratio) for x in range(num_clips)]  # Python's round: half to even, as np.around
        else:
            offsets = [0] * num_clips
    return [int(o % num_frames) for o in offsets]


def mmaction2_test(num_frames, num_clips, twice_sample):
    """mmaction2 ``SampleFrames(clip_len=1, num_clips=T, test_mode=True)`` (2D recognizer branch) + 'loop'."""
    avg_interval = num_frames / float(num_clips)
    base = [x * avg_interval for x in range(num_clips)]
    offsets = [b + avg_interval / 2.0 for b in base]
    if twice_sample:
        offsets = offsets + base
    inds = [int(o % num_frames) for o in offsets]
    return [inds[i : i + num_clips] for i in range(0, len(inds), num_clips)]


def tcp_fuse(logits):
    """TCP ``test_models.py`` eval_video with --softmax: softmax, then max over the views."""
    n, v, k = logits.shape
    rst = torch.softmax(logits.reshape(n * v, k), dim=-1)
    return rst.reshape(n, v, -1).max(1)[0]


def mmaction2_fuse(logits, average_clips):
    """mmaction2 ``BaseHead.average_clip``."""
    if average_clips == "prob":
        return torch.softmax(logits, dim=2).mean(dim=1)
    return logits.mean(dim=1)


# ------------------------------------------------------------------------------------------------ tests
def test_tcp_training_indices_equal_the_official_draws():
    for f in FRAMES:
        for t in SEGMENTS:
            for seed in range(3):
                ours = sample_indices(f, t, "train", generator=ScriptedRng(seed), protocol="tcp")
                ref = tcp_train(f, t, ScriptedRng(seed).integers)
                assert ours.tolist() == ref, (f, t, seed)


def test_mmaction2_training_indices_equal_the_official_draws():
    for f in FRAMES:
        for t in SEGMENTS:
            for keep in (False, True):
                rng = ScriptedRng(7)
                ours = sample_indices(f, t, "train", generator=rng, protocol="mmaction2", keep_tail_frames=keep)
                ref_rng = ScriptedRng(7)
                ref = mmaction2_train(f, t, ref_rng.integers, ref_rng.uniform, keep)
                assert ours.tolist() == ref, (f, t, keep)


def test_training_support_never_reaches_the_tail_and_short_videos_are_deterministic():
    # F = 30, T = 8: segments of 3 frames; frames 24..29 are never drawn (real-length segments would reach them)
    rng = np.random.default_rng(0)
    seen = np.zeros(30, dtype=int)
    for _ in range(2000):
        idx = sample_indices(30, 8, "train", generator=rng, protocol="tcp")
        assert all(3 * s <= i < 3 * s + 3 for s, i in enumerate(idx))
        np.add.at(seen, idx, 1)
    assert seen[24:].sum() == 0 and (seen[:24] > 500).all()  # each reachable frame about 2000/3 times
    # F < T: TCP gives frame 0 everywhere, mmaction2 round(t·F/T) mod F, both without randomness
    assert sample_indices(5, 8, "train", protocol="tcp").tolist() == [0] * 8
    assert sample_indices(3, 8, "train", protocol="mmaction2").tolist() == [0, 0, 1, 1, 2, 2, 2, 0]


def test_test_indices_equal_the_official_ones():
    for f in FRAMES:
        for t in SEGMENTS:
            assert sample_indices(f, t, "test", protocol="tcp").tolist() == tcp_test(f, t, False), (f, t)
            assert sample_indices(f, t, "test", num_clips=10, protocol="tcp").tolist() == tcp_test(f, t, True)
            assert sample_indices(f, t, "test", protocol="mmaction2").tolist() == mmaction2_test(f, t, False)
            ours = sample_indices(f, t, "test", num_clips=2, protocol="mmaction2")
            assert ours.tolist() == mmaction2_test(f, t, True), (f, t)
    # the worked example: ten clips at 1/10 … 9/10 of a segment, then 0 (not the (v + ½)/10 spread)
    assert sample_indices(80, 8, "test", num_clips=10, protocol="tcp")[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert sample_indices(80, 8, "test", num_clips=2, protocol="mmaction2")[:, 1].tolist() == [15, 10]


def test_clip_counts_outside_a_protocol_are_refused():
    with pytest.raises(ValueError, match=r"protocol 'tcp' defines 1 or 10 test clips, got num_clips=2"):
        sample_indices(80, 8, "test", num_clips=2, protocol="tcp")
    with pytest.raises(ValueError, match=r"protocol 'mmaction2' defines 1 or 2 test clips, got num_clips=10"):
        ClipConfig(num_clips=10, protocol="mmaction2")
    with pytest.raises(ValueError, match="protocol must be one of"):
        ClipConfig(protocol="tsn")
    with pytest.raises(ValueError, match="keep_tail_frames is an option of protocol 'mmaction2'"):
        ClipConfig(keep_tail_frames=True)


def test_view_fusion_matches_the_official_test_code():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 30, 7, generator=g) * 3
    torch.testing.assert_close(fuse_views(logits, "max_prob").exp(), tcp_fuse(logits))
    torch.testing.assert_close(fuse_views(logits, "prob").exp(), mmaction2_fuse(logits, "prob"))
    torch.testing.assert_close(fuse_views(logits, "score"), mmaction2_fuse(logits, "score"))
    # one confident view against many lukewarm ones: the max of the softmax and the mean disagree
    split = torch.tensor([[[9.0, 0.0, 0.0]] + [[0.0, 1.5, 0.0]] * 9])
    assert tcp_fuse(split).argmax(1).item() == 0 and mmaction2_fuse(split, "prob").argmax(1).item() == 1
    assert fuse_views(split, "max_prob").argmax(1).item() == 0 and fuse_views(split, "prob").argmax(1).item() == 1


def test_multiview_predict_fuses_the_views_of_each_video():
    class MeanLevel(torch.nn.Module):  # logits from each view's mean pixel: the views of a video differ
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3, 4))
            return torch.stack([m, -m, 2 * torch.sin(3 * m)], dim=1)

    g = torch.Generator().manual_seed(1)
    clips = torch.randint(0, 256, (2, 6, 2, 3, 4, 4), generator=g, dtype=torch.uint8)
    from polyzoo.video.data import normalize

    per_view = MeanLevel()(normalize(clips.flatten(0, 1))).view(2, 6, 3)
    out, _ = multiview_predict_fn("max_prob")(MeanLevel(), (clips, torch.zeros(2)))
    torch.testing.assert_close(out.exp(), tcp_fuse(per_view))


def test_tcp_drops_training_videos_under_three_frames(tmp_path, index_clip):
    from polyzoo.video.synthetic import write_video

    short = write_video(tmp_path / "short.mp4", index_frames(2), fps=10)
    samples = [VideoSample(short, 5), VideoSample(index_clip, 1)]
    cfg = ClipConfig(num_segments=4, input_size=16, scale_size=16, scales=(1.0,), flip=False)
    train = VideoDataset(samples, config=cfg, mode="train")
    clip, label = train[0]  # the 2-frame video is dropped: the next one takes its place
    assert label == 1 and list(train.excluded) == [str(short)]
    assert [len(train.drop_short()), len(train)] == [1, 1]
    # mmaction2 keeps it (frames round(t·2/4) mod 2, half to even: 0, 0, 1, 2 mod 2 = 0)
    mm = VideoDataset(samples, config=ClipConfig(4, 16, 16, (1.0,), False, protocol="mmaction2"), mode="train")
    clip, label = mm[0]
    assert label == 5 and frame_index(clip) == [0, 0, 1, 0]
    # the official test script (one weights file: remove_missing) drops them from the test list too
    test = VideoDataset(samples, config=cfg, mode="test")
    assert test[0][1] == 5  # not dropped lazily in testing: drop_short does it up front
    assert test.drop_short() == [samples[0]] and len(test) == 1


def test_dataset_draws_tcp_training_frames_from_integer_segments(index_clip):
    # 30 frames, 8 segments: integer segments of 3, so frames 24..29 never appear in a training clip
    cfg = ClipConfig(num_segments=8, input_size=16, scale_size=16, scales=(1.0,), flip=False)
    train = VideoDataset([VideoSample(index_clip, 0)], config=cfg, mode="train", cache_frames=True)
    torch.manual_seed(0)
    for _ in range(30):
        idx = frame_index(train[0][0])
        assert all(3 * s <= i < 3 * s + 3 for s, i in enumerate(idx)), idx
    test = VideoDataset([VideoSample(index_clip, 0)], config=ClipConfig(8, 16, 16, num_clips=10), mode="test")
    views = test[0][0]
    assert views.shape == (10, 8, 3, 16, 16)
    assert [frame_index(v)[1] for v in views] == [math.floor(3.75 / 10 * j + 3.75) for j in (*range(1, 10), 0)]

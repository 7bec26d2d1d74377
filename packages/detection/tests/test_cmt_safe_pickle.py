"""CMT info files are read by a restricted unpickler: a payload pickle placed as an info file does not run."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from polyzoo.detection.cmt.safe_pickle import load_info_pickle, restricted_mmengine_load


class _OpenPayload:
    """Unpickling this calls ``open(path, "w")``: it creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _TouchPayload:
    """Unpickling this calls ``pathlib.Path.touch(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _write_payload_info(path: Path, payload: object) -> Path:
    info = {"metainfo": {"dataset": "nuscenes", "version": "v1.0-mini"}, "data_list": [{"token": "a", "x": payload}]}
    path.write_bytes(pickle.dumps(info))
    return path


@pytest.mark.parametrize("payload_cls", [_OpenPayload, _TouchPayload])
def test_payload_info_file_is_refused_and_does_not_run(tmp_path, payload_cls):
    # the payload is real: a plain unpickle creates the marker file
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(payload_cls(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    info = _write_payload_info(tmp_path / "nuscenes_infos_train.pkl", payload_cls(marker))
    with pytest.raises(ValueError, match=r"nuscenes_infos_train\.pkl: refusing to unpickle the global") as err:
        load_info_pickle(info)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_payload_info_file_is_refused_by_the_cmt_dataset(tmp_path):
    pytest.importorskip("mmdet3d")
    import polyzoo.detection.cmt.mmdet3d_plugin as plugin

    marker = tmp_path / "marker"
    info = _write_payload_info(tmp_path / "evil_infos.pkl", _OpenPayload(marker))
    with pytest.raises(ValueError, match=r"evil_infos\.pkl: refusing to unpickle the global io\.open"):
        plugin.CmtNuScenesDataset(
            data_root=str(tmp_path),
            ann_file="evil_infos.pkl",
            pipeline=[],
            metainfo=dict(classes=["car"]),
            modality=dict(use_lidar=True, use_camera=False),
            data_prefix=dict(pts=""),
            test_mode=True,
        )
    assert not marker.exists()
    # the metric's info-file read goes through the same unpickler, and mmengine's load is restored afterwards
    import mmdet3d.evaluation.metrics.nuscenes_metric as nuscenes_metric

    original = nuscenes_metric.load
    with restricted_mmengine_load(nuscenes_metric), pytest.raises(ValueError, match=r"evil_infos\.pkl"):
        nuscenes_metric.load(str(info))
    assert nuscenes_metric.load is original
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_and_builtin_content_round_trips(tmp_path, protocol):
    data = {
        "metainfo": OrderedDict(categories={"car": 0}, version="v1.0"),
        "data_list": [
            {
                "lidar2cam": np.arange(16, dtype=np.float64).reshape(4, 4),
                "labels": np.array([1, 2, 3], dtype=np.int64),
                "mask": np.array([True, False]),
                "score": np.float32(0.5),
                "count": np.int64(7),
                "names": ("a", "b"),
                "tags": {"x", "y"},
                "raw": b"\x00\x01",
                "none": None,
            }
        ],
    }
    path = tmp_path / "infos.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = load_info_pickle(path)
    item, ref = out["data_list"][0], data["data_list"][0]
    for key in ("lidar2cam", "labels", "mask"):
        np.testing.assert_array_equal(item[key], ref[key])
        assert item[key].dtype == ref[key].dtype
    assert item["score"] == np.float32(0.5) and item["count"] == 7
    assert (item["names"], item["tags"], item["raw"], item["none"]) == (("a", "b"), {"x", "y"}, b"\x00\x01", None)
    assert out["metainfo"] == data["metainfo"]


def test_missing_and_broken_info_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.pkl"):
        load_info_pickle(tmp_path / "absent.pkl")
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(ValueError, match=r"broken\.pkl"):
        load_info_pickle(broken)


def test_toy_info_file_loads_through_the_cmt_dataset(tmp_path):
    pytest.importorskip("mmdet3d")
    import polyzoo.detection.cmt.mmdet3d_plugin as plugin
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    path = write_toy_dataset(tmp_path, ToySceneConfig(num_scenes=2))
    ds = plugin.CmtNuScenesDataset(
        data_root=str(tmp_path) + "/",
        ann_file=path.name,
        pipeline=[],
        metainfo=dict(classes=["car", "pedestrian", "traffic_cone"]),
        modality=dict(use_lidar=True, use_camera=True),
        data_prefix=dict(pts="", img=""),
        test_mode=False,
    )
    assert len(ds) == 2
    assert ds.get_data_info(0)["ann_info"]["gt_bboxes_3d"].tensor.shape[0] >= 1

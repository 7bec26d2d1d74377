"""RefT mmdet plugin: the tiny config builds and runs one loss + predict step; support bank; iFSIS distillation."""

import copy
from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "reft"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core runners: oversubscribed OpenMP threads made these steps ~30x slower
    yield from _env(tmp_path_factory)
    torch.set_num_threads(threads)


def _env(tmp_path_factory):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from polyzoo.detection.reft import mmdet_plugin  # noqa: F401  (registers RefT)
    from polyzoo.detection.reft.shapes import make_shapes_coco

    root = tmp_path_factory.mktemp("shapes")
    make_shapes_coco(root / "train", num_images=8, seed=0)
    make_shapes_coco(root / "val", num_images=4, seed=1)
    cfg = Config.fromfile(str(CONFIGS / "reft_tiny_shapes.py"))
    cfg.train_dataloader.dataset.dataset.data_root = str(root) + "/"
    cfg.val_dataloader.dataset.data_root = str(root) + "/"
    cfg.custom_hooks[0].support_dataset.data_root = str(root) + "/"
    for ev in cfg.val_evaluator:
        ev.ann_file = str(root / "val" / "annotations.json")
    init_default_scope("mmdet")
    yield cfg


def _build(cfg_model):
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg_model))
    model.init_weights()
    return model


def _batch(cfg, n_query=2):
    from mmdet.registry import DATASETS
    from mmengine.registry import FUNCTIONS

    ds = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    return FUNCTIONS.get("reft_collate")([ds[i] for i in range(n_query)])


def test_tiny_config_loss_and_predict_step(env):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    cfg = env
    model = _build(cfg.model)
    batch = _batch(cfg)
    roles = [d.metainfo.get("reft_role") for d in batch["data_samples"]]
    assert roles.count("support") == 8  # one episode per batch (episode_every=4), one image per class
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data["inputs"], data["data_samples"])
    assert {"loss_cls", "loss_mask", "loss_dice", "d0.loss_cls"} <= set(losses)
    total = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("panoptic_head.mdw.0.attn.out_proj")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)  # the references receive gradient

    model.eval()
    vds = DATASETS.build(copy.deepcopy(cfg.val_dataloader.dataset))
    vdata = model.data_preprocessor(pseudo_collate([vds[0], vds[1]]), False)
    with torch.no_grad():
        out = model.predict(vdata["inputs"], vdata["data_samples"])
    inst = out[0].pred_instances
    assert inst.masks.shape[-2:] == (64, 64) and len(inst.scores) == len(inst.labels) <= 20
    assert int(inst.labels.max()) < 8


def test_support_bank_identity_start_and_distillation(env):
    from polyzoo.detection.reft.mmdet_plugin import SupportRefs, compute_support_bank

    cfg = env
    model = _build(cfg.model)
    batch = _batch(cfg, n_query=1)
    support = {
        "inputs": [
            x for x, d in zip(batch["inputs"], batch["data_samples"], strict=True) if d.metainfo.get("reft_role")
        ],
        "data_samples": [d for d in batch["data_samples"] if d.metainfo.get("reft_role")],
    }
    bank = compute_support_bank(model, [support])
    assert bank.present.sum() >= 1 and bank.queries.shape[1] == 32
    assert len(bank.centres) == 3 and bank.centres[0].shape == (8, 32)
    assert set(bank.query_labels.tolist()) <= set(torch.nonzero(bank.present).flatten().tolist())

    # identity start: with fresh (zero-output) reference modules, RefT's outputs equal Mask2Former's (no refs)
    model.eval()
    data = model.data_preprocessor({"inputs": batch["inputs"][:1], "data_samples": batch["data_samples"][:1]}, False)
    feats = model.extract_feat(data["inputs"])
    with torch.no_grad():
        plain = model.panoptic_head(feats, data["data_samples"], None)[0][-1]
        ref = model.panoptic_head(feats, data["data_samples"], bank)[0][-1]
    torch.testing.assert_close(plain, ref)

    # iFSIS: a base-class teacher (6 classes) distils into the 8-class student
    t_cfg = copy.deepcopy(cfg.model)
    t_cfg.panoptic_head.num_things_classes = 6
    t_cfg.panoptic_head.loss_cls.class_weight = [1.0] * 6 + [0.1]
    t_cfg.panoptic_fusion_head.num_things_classes = 6
    teacher = _build(t_cfg)
    s_cfg = copy.deepcopy(cfg.model)
    s_cfg.distill = dict(base_class_ids=[0, 1, 2, 3, 4, 5])
    student = _build(s_cfg)
    student.attach_teacher(teacher)
    assert not any(k.startswith("_teacher") for k in student.state_dict())
    # the base bank lives in the teacher's 6-class label space; the 8-class student sees it padded (novel absent)
    base_bank = SupportRefs(
        [c[:6] for c in bank.centres], torch.tensor([True] * 6), bank.queries[:0], bank.query_labels[:0]
    )
    student.set_base_bank(base_bank)
    student.train()
    data = student.data_preprocessor(batch, True)
    losses = student.loss(data["inputs"], data["data_samples"])
    assert "loss_kd_cls" in losses and "loss_kd_feat" in losses
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_support_refs_grow_to_a_larger_label_space():
    from polyzoo.detection.reft.mmdet_plugin import SupportRefs

    refs = SupportRefs([torch.randn(3, 4), torch.randn(3, 4)], torch.tensor([True, False, True]),
                       torch.randn(2, 4), torch.tensor([0, 2]))  # fmt: skip
    grown = refs.with_num_classes(5)
    assert grown.present.tolist() == [True, False, True, False, False]
    for c, g in zip(refs.centres, grown.centres, strict=True):
        assert g.shape == (5, 4) and torch.equal(g[:3], c) and not g[3:].any()
    assert torch.equal(grown.queries, refs.queries) and torch.equal(grown.query_labels, refs.query_labels)
    novel = SupportRefs([torch.ones(5, 4)] * 2, torch.tensor([False] * 3 + [True] * 2), torch.ones(1, 4),
                        torch.tensor([4]))  # fmt: skip
    merged = grown.merge(novel)
    assert merged.present.tolist() == [True, False, True, True, True]
    assert torch.equal(merged.centres[0][0], refs.centres[0][0]) and torch.equal(merged.centres[0][4], torch.ones(4))
    with pytest.raises(ValueError, match="shrink"):
        refs.with_num_classes(2)


def test_r50_coco_configs_parse():
    from mmengine.config import Config

    for name, n_cls in [("reft_r50_coco_base60.py", 60), ("reft_r50_coco_gfsis_10shot.py", 80)]:
        cfg = Config.fromfile(str(CONFIGS / name))
        assert cfg.model.type == "RefT" and cfg.model.panoptic_head.type == "RefTHead"
        assert cfg.model.panoptic_head.num_things_classes == n_cls
        assert cfg.model.panoptic_head.transformer_decoder.num_layers == 9
        assert cfg.model.panoptic_head.num_queries == 100
        assert [e.type for e in cfg.val_evaluator] == ["CocoMetric", "FewShotCocoMetric"]
        assert len(cfg.val_evaluator[1].classes) == n_cls
        assert cfg.custom_hooks[0].type == "RefTSupportBankHook"


def test_mmengine_runner_trains_and_evaluates_tiny_config(env, tmp_path):
    """Two iterations + one validation through mmengine's Runner (what tools/train.py builds)."""
    from mmengine.runner import Runner

    cfg = copy.deepcopy(env)
    cfg.work_dir = str(tmp_path / "work")
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=2)
    cfg.param_scheduler = dict(type="MultiStepLR", begin=0, end=2, by_epoch=False, milestones=[1], gamma=0.1)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=2, by_epoch=False, save_last=True)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.episode_every = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    for key in ("fewshot/segm_nAP", "fewshot/segm_nAP50", "fewshot/segm_bAP", "fewshot/bbox_nAP", "fewshot/segm_AP"):
        assert key in metrics and 0.0 <= metrics[key] <= 100.0
    assert runner.model._bank is not None  # the support-bank hook ran before validation


def test_support_refs_merge_and_state_dict_roundtrip(env):
    from polyzoo.detection.reft.mmdet_plugin import SupportRefs

    base = SupportRefs(
        [torch.ones(4, 2)], torch.tensor([True, True, False, False]), torch.zeros(3, 2), torch.tensor([0, 1, 1])
    )
    novel = SupportRefs(
        [torch.full((4, 2), 2.0)], torch.tensor([False, True, True, False]), torch.ones(2, 2), torch.tensor([1, 2])
    )
    merged = base.merge(novel)
    assert merged.present.tolist() == [True, True, True, False]
    assert merged.centres[0][:, 0].tolist() == [1.0, 2.0, 2.0, 1.0]  # novel's classes replace; absent stay masked
    assert merged.query_labels.tolist() == [0, 1, 2]  # base's class-1 queries replaced by novel's
    again = SupportRefs.from_state_dict(merged.state_dict())
    assert torch.equal(again.queries, merged.queries) and torch.equal(again.present, merged.present)


def test_episode_dataset_class_subsets_and_cadence(env):
    from mmdet.registry import DATASETS

    d = copy.deepcopy(env.train_dataloader.dataset)
    d.classes_per_episode, d.episode_every = 3, 2
    ds = DATASETS.build(d)
    first, second = ds[0], ds[1]
    assert len(first) == 1 + 3 and len(second) == 1  # an episode every second item
    labels = {int(lab) for item in first[1:] for lab in item["data_samples"].gt_instances.labels}
    assert len(labels) >= 1 and all(item["data_samples"].metainfo["reft_role"] == "support" for item in first[1:])
    assert "reft_role" not in first[0]["data_samples"].metainfo

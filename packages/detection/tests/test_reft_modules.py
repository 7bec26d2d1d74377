"""RefT plain-PyTorch modules: mask pooling, class centres, top-K support queries, linking, KD loss."""

import torch

from polyzoo.detection.reft.modules import (
    ClassEnhancedKDLoss,
    CosineClassifier,
    MaskDynamicWeighting,
    QueryLinking,
    class_centres,
    mask_pool,
    select_topk_support_queries,
)


def test_mask_pool_equals_masked_mean():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 6, 7, generator=g)
    masks = (torch.rand(2, 3, 6, 7, generator=g) > 0.5).float()
    out = mask_pool(feats, masks)
    assert out.shape == (2, 3, 5)
    for b in range(2):
        for n in range(3):
            sel = masks[b, n].bool()
            expected = feats[b][:, sel].mean(dim=1)
            torch.testing.assert_close(out[b, n], expected)


def test_mask_pool_resizes_masks_and_rejects_bad_shapes():
    feats = torch.ones(1, 2, 4, 4) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    masks = torch.zeros(1, 1, 16, 16)
    masks[0, 0, :8, :8] = 1
    torch.testing.assert_close(mask_pool(feats, masks)[0, 0], torch.tensor([1.0, 3.0]))
    try:
        mask_pool(feats, torch.zeros(2, 1, 4, 4))
    except ValueError as err:
        assert "same B" in str(err)
    else:
        raise AssertionError("mismatched batch sizes must raise")


def test_class_centres_are_order_invariant_and_correct():
    g = torch.Generator().manual_seed(1)
    pooled = torch.randn(7, 4, generator=g)
    labels = torch.tensor([0, 2, 2, 0, 3, 2, 0])
    centres, present = class_centres(pooled, labels, num_classes=5)
    assert present.tolist() == [True, False, True, True, False]
    torch.testing.assert_close(centres[2], pooled[labels == 2].mean(0))
    assert torch.equal(centres[1], torch.zeros(4))
    perm = torch.randperm(7, generator=g)
    centres_p, present_p = class_centres(pooled[perm], labels[perm], num_classes=5)
    torch.testing.assert_close(centres_p, centres)
    assert torch.equal(present_p, present)


def test_class_centres_from_support_images_invariant_to_image_order():
    """Pool two support images, then permute images (and instances): the centres do not change."""
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(3, 8, 5, 5, generator=g)
    masks = (torch.rand(3, 2, 5, 5, generator=g) > 0.4).float()
    labels = torch.tensor([[1, 0], [1, 2], [0, 2]])

    def centres_of(order):
        pooled = mask_pool(feats[order], masks[order]).reshape(-1, 8)
        return class_centres(pooled, labels[order].reshape(-1), 3)[0]

    torch.testing.assert_close(centres_of([0, 1, 2]), centres_of([2, 0, 1]))


def test_select_topk_support_queries_per_class():
    feats = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    logits = torch.full((2, 3, 4), -10.0)
    logits[0, 1, 1] = 10.0  # best for class 1
    logits[1, 2, 1] = 5.0  # second for class 1
    logits[1, 0, 2] = 10.0  # best for class 2
    labels = torch.tensor([[1, -1], [2, 1]])
    q, c = select_topk_support_queries(feats, logits, labels, k=2)
    assert c.tolist() == [1, 1, 2, 2]
    torch.testing.assert_close(q[0], feats[0, 1])
    torch.testing.assert_close(q[1], feats[1, 2])
    torch.testing.assert_close(q[2], feats[1, 0])


def test_linking_changes_only_query_tokens():
    torch.manual_seed(0)
    link = QueryLinking(16, 4)
    torch.nn.init.normal_(link.attn.out_proj.weight)  # leave the identity start
    query = torch.randn(2, 5, 16)
    support = torch.randn(6, 16)
    support_before = support.clone()
    new_query, support_after = link.link(query, support)
    assert torch.equal(support_after, support_before)
    assert new_query.shape == query.shape
    assert not torch.allclose(new_query, query)
    # the result depends on the support tokens
    other, _ = link.link(query, support + 1.0)
    assert not torch.allclose(other, new_query)


def test_reference_modules_start_as_identity_and_skip_absent_classes():
    torch.manual_seed(0)
    mdw = MaskDynamicWeighting(8, 2)
    feats = torch.randn(2, 10, 8)
    centres = torch.randn(4, 8)
    torch.testing.assert_close(mdw(feats, centres, torch.ones(4, dtype=torch.bool)), feats)
    torch.nn.init.normal_(mdw.attn.out_proj.weight)
    assert torch.equal(mdw(feats, centres, torch.zeros(4, dtype=torch.bool)), feats)
    present = torch.tensor([True, False, True, False])
    a = mdw(feats, centres, present)
    changed = centres.clone()
    changed[~present] += 5.0  # absent classes' centres must not matter
    torch.testing.assert_close(mdw(feats, changed, present), a)


def test_kd_loss_is_zero_for_identical_models_and_positive_otherwise():
    torch.manual_seed(0)
    base_ids = [0, 2]
    kd = ClassEnhancedKDLoss(base_ids, cls_weight=1.0, feat_weight=1.0)
    student = torch.randn(2, 4, 4)  # 3 classes + no-object
    teacher = student[..., [0, 2, 3]].clone()
    feats = [torch.randn(2, 6, 8)]
    out = kd(student, teacher, feats, [f.clone() for f in feats])
    assert float(out["loss_kd_cls"]) < 1e-6 and float(out["loss_kd_feat"]) == 0.0
    # the novel column (1) does not enter the KD term
    student2 = student.clone()
    student2[..., 1] += 3.0
    assert float(kd(student2, teacher)["loss_kd_cls"]) < 1e-6
    out2 = kd(torch.randn(2, 4, 4), teacher, [torch.randn(2, 6, 8)], feats)
    assert float(out2["loss_kd_cls"]) > 0 and float(out2["loss_kd_feat"]) > 0


def test_cosine_classifier_is_scale_bounded():
    clf = CosineClassifier(8, 3, scale=20.0)
    out = clf(torch.randn(5, 8) * 100)
    assert out.shape == (5, 3) and float(out.abs().max()) <= 20.0 + 1e-4

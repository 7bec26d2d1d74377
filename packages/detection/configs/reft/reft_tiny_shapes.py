# RefT tiny CPU config: synthetic shapes (polyzoo.detection.reft.shapes), 64x64 images, 8 classes (6 base, 2 novel).
# Same mechanisms as the R-50 config (MSDeformAttn pixel decoder, masked-attention decoder, Hungarian matching with
# point-sampled mask/dice losses, both RefT references); sizes shrunk so one loss+predict step takes ~1 s on a CPU.
# Random init (no pretrained weights: nothing is downloaded). Point data_root at a folder made by
#   uv run polyzoo detection shapes-data data/shapes  (or polyzoo.detection.reft.shapes.make_shapes_coco).
custom_imports = dict(imports=["polyzoo.detection.reft.mmdet_plugin"], allow_failed_imports=False)
default_scope = "mmdet"

classes = ("circle", "square", "triangle", "diamond", "cross", "hexagon", "star", "ring")
num_classes = len(classes)
data_root = "data/shapes/"
dims = 32
image_size = (64, 64)

model = dict(
    type="RefT",
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        pad_mask=True,
        mask_pad_value=0,
        pad_seg=False,
    ),
    backbone=dict(
        type="ResNet",
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False,
        style="pytorch",
        init_cfg=None,
    ),
    panoptic_head=dict(
        type="RefTHead",
        in_channels=[16, 32, 64, 128],
        strides=[4, 8, 16, 32],
        feat_channels=dims,
        out_channels=dims,
        num_things_classes=num_classes,
        num_stuff_classes=0,
        num_queries=20,
        num_transformer_feat_level=3,
        topk=5,
        pixel_decoder=dict(
            type="MSDeformAttnPixelDecoder",
            num_outs=3,
            norm_cfg=dict(type="GN", num_groups=8),
            act_cfg=dict(type="ReLU"),
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=dims, num_heads=4, num_levels=3, num_points=4, dropout=0.0, batch_first=True
                    ),
                    ffn_cfg=dict(
                        embed_dims=dims,
                        feedforward_channels=2 * dims,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type="ReLU", inplace=True),
                    ),
                ),
            ),
            positional_encoding=dict(num_feats=dims // 2, normalize=True),
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=dims // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=dims, num_heads=4, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=dims, num_heads=4, dropout=0.0, batch_first=True),
                ffn_cfg=dict(
                    embed_dims=dims,
                    feedforward_channels=2 * dims,
                    num_fcs=2,
                    ffn_drop=0.0,
                    act_cfg=dict(type="ReLU", inplace=True),
                ),
            ),
            init_cfg=None,
        ),
        loss_cls=dict(
            type="CrossEntropyLoss",
            use_sigmoid=False,
            loss_weight=2.0,
            reduction="mean",
            class_weight=[1.0] * num_classes + [0.1],
        ),
        loss_mask=dict(type="CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
        loss_dice=dict(
            type="DiceLoss",
            use_sigmoid=True,
            activate=True,
            reduction="mean",
            naive_dice=True,
            eps=1.0,
            loss_weight=5.0,
        ),
    ),
    panoptic_fusion_head=dict(
        type="MaskFormerFusionHead",
        num_things_classes=num_classes,
        num_stuff_classes=0,
        loss_panoptic=None,
        init_cfg=None,
    ),
    train_cfg=dict(
        num_points=1024,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        assigner=dict(
            type="HungarianAssigner",
            match_costs=[
                dict(type="ClassificationCost", weight=2.0),
                dict(type="CrossEntropyLossCost", weight=5.0, use_sigmoid=True),
                dict(type="DiceCost", weight=5.0, pred_act=True, eps=1.0),
            ],
        ),
        sampler=dict(type="MaskPseudoSampler"),
    ),
    test_cfg=dict(
        panoptic_on=False,
        semantic_on=False,
        instance_on=True,
        max_per_image=20,
        iou_thr=0.8,
        filter_low_score=True,
    ),
    init_cfg=None,
)

backend_args = None
train_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True, backend_args=backend_args),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True, backend_args=backend_args),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
base_dataset = dict(
    type="CocoDataset",
    data_root=data_root,
    metainfo=dict(classes=classes),
    ann_file="train/annotations.json",
    data_prefix=dict(img="train/images/"),
    filter_cfg=dict(filter_empty_gt=True, min_size=1),
    pipeline=train_pipeline,
    backend_args=backend_args,
)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="reft_collate"),
    dataset=dict(type="RefTEpisodeDataset", dataset=base_dataset, shots_per_class=1, episode_every=4, seed=0),
)
# references for evaluation: the support bank of the support set, recomputed before every val/test epoch
support_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True, backend_args=backend_args),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type="PackDetInputs"),
]
support_dataset = dict(base_dataset, pipeline=support_pipeline)
custom_hooks = [dict(type="RefTSupportBankHook", support_dataset=support_dataset, batch_size=8)]
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="CocoDataset",
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file="val/annotations.json",
        data_prefix=dict(img="val/images/"),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args,
    ),
)
test_dataloader = val_dataloader
val_evaluator = [
    dict(type="CocoMetric", ann_file=data_root + "val/annotations.json", metric=["bbox", "segm"]),
    # nAP / nAP50 / bAP / AP with pycocotools COCOeval; shapes 7 (star) and 8 (ring) are the novel classes
    dict(type="FewShotCocoMetric", ann_file=data_root + "val/annotations.json", novel_ids=[7, 8], classes=classes),
]
test_evaluator = val_evaluator

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
)
max_iters = 300
param_scheduler = dict(type="MultiStepLR", begin=0, end=max_iters, by_epoch=False, milestones=[250], gamma=0.1)
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=max_iters, by_epoch=False, save_last=True, max_keep_ckpts=1),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="DetVisualizationHook"),
)
env_cfg = dict(
    cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="nccl")
)
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="DetLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(type="LogProcessor", window_size=50, by_epoch=False)
log_level = "INFO"
load_from = None
resume = False

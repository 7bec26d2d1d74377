# RefT, COCO base training on the 60 base classes (arXiv 2301.01156 v3; no official code exists).
# Model = mmdet's Mask2Former R-50 instance config (9 decoder layers, 100 queries, MSDeformAttn pixel decoder with
# 6 layers, CE 2.0 / mask BCE 5.0 / Dice 5.0, 12544 points, AdamW 1e-4, wd 0.05, backbone lr x0.1, clip 0.01) with the
# head swapped for RefTHead. The paper text we could read gives no RefT-specific sizes or schedules: topk=5 and the
# reference attention heads (= decoder heads, 8) are ours. The 50-epoch LSJ schedule is Mask2Former's.
# Data: COCO 2017 train restricted to the 60 base classes (annotations of novel classes removed from the file you
# point ann_file at; see polyzoo.detection.reft.protocols.coco_split). Pretrained backbone: 'torchvision://resnet50'
# is downloaded by mmengine; offline, set
# model.backbone.init_cfg = dict(type='Pretrained', checkpoint='/path/to/resnet50.pth').
# Self-contained on top of the tiny config's structure (mmengine's "mmdet::" base syntax needs pkg_resources, which
# this environment lacks), with every size set back to Mask2Former R-50's.
_base_ = "./reft_tiny_shapes.py"
custom_imports = dict(imports=["polyzoo.detection.reft.mmdet_plugin"], allow_failed_imports=False)
data_root = "data/coco/"
image_size = (1024, 1024)

NOVEL_IDS = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)
# COCO class names in category-id order; base = those whose id is not novel
ALL_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
NOVEL_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat", "dog", "horse",
    "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table", "tv",
)  # fmt: skip
BASE_CLASSES = tuple(c for c in ALL_CLASSES if c not in NOVEL_CLASSES)
num_classes = len(BASE_CLASSES)

model = dict(
    type="RefT",
    data_preprocessor=dict(
        batch_augments=[
            dict(type="BatchFixedSizePad", size=image_size, img_pad_value=0, pad_mask=True, mask_pad_value=0)
        ]
    ),
    backbone=dict(
        depth=50,
        base_channels=64,
        norm_cfg=dict(type="BN", requires_grad=False),
        norm_eval=True,
        init_cfg=dict(_delete_=True, type="Pretrained", checkpoint="torchvision://resnet50"),
    ),
    panoptic_head=dict(
        type="RefTHead",
        in_channels=[256, 512, 1024, 2048],
        feat_channels=256,
        out_channels=256,
        num_things_classes=num_classes,
        num_queries=100,
        topk=5,
        pixel_decoder=dict(
            norm_cfg=dict(type="GN", num_groups=32),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8),
                    ffn_cfg=dict(embed_dims=256, feedforward_channels=1024),
                ),
            ),
            positional_encoding=dict(num_feats=128),
        ),
        positional_encoding=dict(num_feats=128),
        transformer_decoder=dict(
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=256, num_heads=8),
                cross_attn_cfg=dict(embed_dims=256, num_heads=8),
                ffn_cfg=dict(embed_dims=256, feedforward_channels=2048),
            ),
        ),
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
    ),
    panoptic_fusion_head=dict(num_things_classes=num_classes),
    train_cfg=dict(num_points=12544),
    test_cfg=dict(max_per_image=100),
)
train_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True, backend_args=None),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomResize", scale=image_size, ratio_range=(0.1, 2.0), resize_type="Resize", keep_ratio=True),
    dict(type="RandomCrop", crop_size=image_size, crop_type="absolute", recompute_bbox=True, allow_negative_crop=True),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True, backend_args=None),
    dict(type="Resize", scale=(1333, 800), keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    dataset=dict(
        episode_every=2,
        classes_per_episode=10,  # ours: 10 random classes x 1 support image per batch of 2 (memory at 1024 px)
        dataset=dict(
            data_root=data_root,
            metainfo=dict(classes=BASE_CLASSES),
            ann_file="annotations/instances_train2017_base60.json",
            data_prefix=dict(img="train2017/"),
            pipeline=train_pipeline,
        ),
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=BASE_CLASSES),
        ann_file="annotations/instances_val2017.json",
        data_prefix=dict(img="val2017/"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = [
    dict(type="CocoMetric", ann_file=data_root + "annotations/instances_val2017.json", metric=["bbox", "segm"]),
    # nAP / nAP50 / bAP / AP (COCOeval restricted to the 20 novel / 60 base ids)
    dict(type="FewShotCocoMetric", ann_file=data_root + "annotations/instances_val2017.json", classes=BASE_CLASSES),
]
test_evaluator = val_evaluator
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=0.0001, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            "backbone": dict(lr_mult=0.1, decay_mult=1.0),
            "query_embed": embed_multi,
            "query_feat": embed_multi,
            "level_embed": embed_multi,
        },
        norm_decay_mult=0.0,
    ),
)
max_iters = 368750
param_scheduler = dict(
    type="MultiStepLR", begin=0, end=max_iters, by_epoch=False, milestones=[327778, 355092], gamma=0.1
)
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=5000)
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=50),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, save_last=True, max_keep_ckpts=3, interval=5000),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)
# Evaluation references: the support bank of a 10-shot base set (TFA-style files merged into one json, e.g. with
# protocols.write_kshot_files + load_finetune_annotations(..., "gfsis"-style base group)); recomputed before each val.
support_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True, backend_args=None),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", scale=(1333, 800), keep_ratio=True),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type="PackDetInputs"),
]
custom_hooks = [
    dict(
        type="RefTSupportBankHook",
        batch_size=2,
        support_dataset=dict(
            type="CocoDataset",
            data_root=data_root,
            metainfo=dict(classes=BASE_CLASSES),
            ann_file="annotations/few_shot/seed0_10shot_base60.json",
            data_prefix=dict(img="train2017/"),
            pipeline=support_pipeline,
        ),
    )
]

# CMT fusion, the paper's best config (junjie18/CMT projects/configs/fusion/cmt_voxel0075_vov_1600x640_cbgs.py)
# translated to mmdet3d 1.x: VoVNet-99-eSE + CPFPN (first level, stride 16), 1600x640 images, 10-sweep LiDAR at
# 0.075 m voxels (SparseEncoder 41x1440x1440 -> SECOND -> SECONDFPN, 512-ch BEV at stride 8), 900 anchors,
# 6-layer PETR decoder, DN (10 groups), focal+L1 Hungarian matching, NMS-free top-300, masked-modality training.
# Paper: nuScenes val 70.3 mAP / 72.9 NDS.
#
# Augmentations as the paper's: multi-modal GT-paste (CmtUnifiedObjectSample, mixup 0.5; build its database first:
#   uv run python tools/data/cmt_gt_database.py THIS_CONFIG --out data/nuscenes/cmt_gt_database
# ), switched off for the last 5 of 20 epochs ("15e+5e", the official README), image resize 0.94-1.25 with flip,
# global rotation/scale/translation and BEV flips, each keeping lidar2img consistent; fp16 (AmpOptimWrapper).
# Weights: img_backbone starts from FCOS3D VoVNet weights in the paper; point init_cfg at a local file, e.g.
#   --cfg-options model.img_backbone.init_cfg.checkpoint=/path/fcos3d_vovnet_imgbackbone-remapped.pth
# Official CMT checkpoints (junjie18/CMT) load with their keys renamed by polyzoo.detection.cmt.official_checkpoint:
#   load_from = "cmt-official://ckpts/cmt_voxel0075_vov_1600x640_epoch20.pth"
# or tools/test.py THIS_CONFIG cmt-official://ckpts/cmt_voxel0075_vov_1600x640_epoch20.pth
# The head defaults are the official ones: official pos2embed, official box code order, GroupLayerNorm eps 1e-6,
# dropout 0.1 on self-attention weights and both attention outputs, none on cross-attention weights or the FFN.
custom_imports = dict(imports=["polyzoo.detection.cmt.mmdet3d_plugin"], allow_failed_imports=False)
default_scope = "mmdet3d"

# the official class order (mmdet3d 1.0's nuScenes order, which official checkpoints predict); mmdet3d 1.x's
# NuScenesDataset maps its own label ids to this order through metainfo
class_names = [
    "car", "truck", "construction_vehicle", "bus", "trailer",
    "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone",
]  # fmt: skip
metainfo = dict(classes=class_names)
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.075, 0.075, 0.2]
image_size = (1600, 640)  # (W, H)
data_root = "data/nuscenes/"
input_modality = dict(use_lidar=True, use_camera=True)
data_prefix = dict(
    pts="samples/LIDAR_TOP",
    sweeps="sweeps/LIDAR_TOP",
    CAM_FRONT="samples/CAM_FRONT",
    CAM_FRONT_LEFT="samples/CAM_FRONT_LEFT",
    CAM_FRONT_RIGHT="samples/CAM_FRONT_RIGHT",
    CAM_BACK="samples/CAM_BACK",
    CAM_BACK_LEFT="samples/CAM_BACK_LEFT",
    CAM_BACK_RIGHT="samples/CAM_BACK_RIGHT",
)

model = dict(
    type="CmtDetector",
    use_grid_mask=True,
    data_preprocessor=dict(
        type="Det3DDataPreprocessor",
        voxel=True,
        voxel_type="hard",
        voxel_layer=dict(
            max_num_points=10, point_cloud_range=point_cloud_range, voxel_size=voxel_size, max_voxels=(120000, 160000)
        ),
        mean=[103.530, 116.280, 123.675],
        std=[57.375, 57.120, 58.395],
        bgr_to_rgb=False,
        pad_size_divisor=32,
    ),
    img_backbone=dict(
        type="VoVNet",
        spec="V-99-eSE",
        out_features=("stage4", "stage5"),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=None,
    ),
    img_neck=dict(type="CPFPN", in_channels=[768, 1024], out_channels=256, num_outs=2),
    pts_voxel_encoder=dict(type="HardSimpleVFE", num_features=5),
    pts_middle_encoder=dict(
        type="SparseEncoder",
        in_channels=5,
        sparse_shape=[41, 1440, 1440],
        output_channels=128,
        order=("conv", "norm", "act"),
        encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, [0, 1, 1]), (0, 0)),
        block_type="basicblock",
    ),
    pts_backbone=dict(
        type="SECOND",
        in_channels=256,
        out_channels=[128, 256],
        layer_nums=[5, 5],
        layer_strides=[1, 2],
        norm_cfg=dict(type="BN", eps=0.001, momentum=0.01),
        conv_cfg=dict(type="Conv2d", bias=False),
    ),
    pts_neck=dict(
        type="SECONDFPN",
        in_channels=[128, 256],
        out_channels=[256, 256],
        upsample_strides=[1, 2],
        norm_cfg=dict(type="BN", eps=0.001, momentum=0.01),
        upsample_cfg=dict(type="deconv", bias=False),
        use_conv_for_no_stride=True,
    ),
    pts_bbox_head=dict(
        type="CmtHead",
        in_channels=512,
        hidden_dim=256,
        num_query=900,
        depth_num=64,
        num_classes=len(class_names),
        pc_range=point_cloud_range,
        num_layers=6,
        num_heads=8,
        ffn_dim=1024,
        dropout=0.1,
        head_conv=64,
        final_kernel=1,
        scalar=10,
        noise_scale=1.0,
        noise_trans=0.0,
        split=0.75,
        dn_weight=1.0,
        code_weights=[2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2],
        loss_cls_weight=2.0,
        loss_bbox_weight=0.25,
        match_cls_weight=2.0,
        match_reg_weight=0.25,
        max_num=300,
        post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
    ),
)

_points = [
    dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
    dict(
        type="LoadPointsFromMultiSweeps",
        sweeps_num=9,
        use_dim=[0, 1, 2, 3, 4],
        pad_empty_sweeps=True,
        remove_close=True,
    ),
]
# multi-modal GT-paste (official UnifiedObjectSample: sample_groups, min 5 points per object, mixup 0.5)
gt_paste = dict(
    type="CmtUnifiedObjectSample",
    db_info=data_root + "cmt_gt_database/dbinfos.json",
    classes=class_names,
    sample_groups=dict(
        car=2, truck=3, construction_vehicle=7, bus=4, trailer=6, barrier=2, motorcycle=6, bicycle=6, pedestrian=2,
        traffic_cone=2,
    ),
    min_points=5,
    mixup_rate=0.5,
)  # fmt: skip
train_pipeline = [
    *_points,
    dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=6),
    dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    gt_paste,
    # the paper's augmentations; each keeps lidar2img consistent with the moved pixels / points / boxes
    dict(type="CmtResizeCropFlipImage", final_size=image_size, resize_lim=(0.94, 1.25), bot_pct_lim=(0.0, 0.0)),
    dict(
        type="CmtGlobalRotScaleTrans",
        rot_range=[-0.78539816, 0.78539816],
        scale_ratio_range=[0.9, 1.1],
        translation_std=[0.5, 0.5, 0.5],
    ),
    dict(type="CmtRandomFlip3D", flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.5),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectNameFilter", classes=class_names),
    dict(type="PointShuffle"),
    dict(type="ModalMask3D", mode="train", p_image=0.25, p_points=0.25),
    dict(type="Pack3DDetInputs", keys=["points", "img", "gt_bboxes_3d", "gt_labels_3d"]),
]
test_pipeline = [
    *_points,
    dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=6),
    dict(type="CmtMultiViewResize", size=image_size, mode="crop_top"),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ModalMask3D", mode="test", mask_modal=None),  # "points" / "image": robustness numbers
    dict(type="Pack3DDetInputs", keys=["points", "img"]),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(
        type="CBGSDataset",
        dataset=dict(
            type="CmtNuScenesDataset",
            data_root=data_root,
            ann_file="nuscenes_infos_train.pkl",
            pipeline=train_pipeline,
            metainfo=metainfo,
            modality=input_modality,
            data_prefix=data_prefix,
            test_mode=False,
            use_valid_flag=True,
            box_type_3d="LiDAR",
        ),
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="CmtNuScenesDataset",
        data_root=data_root,
        ann_file="nuscenes_infos_val.pkl",
        pipeline=test_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        data_prefix=data_prefix,
        test_mode=True,
        box_type_3d="LiDAR",
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    type="CmtNuScenesMetric", data_root=data_root, ann_file=data_root + "nuscenes_infos_val.pkl", metric="bbox"
)
test_evaluator = val_evaluator

# AdamW 1e-4, wd 0.01; image backbone lr x0.01, image neck x0.1; grad clip 35; 20 epochs of cyclic lr
# (peak x8 over 40 %, then down to 1e-4 x) with inverse cyclic momentum (0.85/0.95 betas).
# fp16 with a dynamic loss scale (the official CustomFp16OptimizerHook): mmengine's AmpOptimWrapper needs a GPU;
# on a CPU pass --cfg-options optim_wrapper.type=OptimWrapper.
optim_wrapper = dict(
    type="AmpOptimWrapper",
    loss_scale="dynamic",
    optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"img_backbone": dict(lr_mult=0.01, decay_mult=5), "img_neck": dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2),
)
max_epochs = 20
param_scheduler = [
    dict(
        type="CosineAnnealingLR", T_max=8, eta_min=1e-4 * 8, begin=0, end=8, by_epoch=True, convert_to_iter_based=True
    ),
    dict(
        type="CosineAnnealingLR",
        T_max=12,
        eta_min=1e-4 * 1e-4,
        begin=8,
        end=20,
        by_epoch=True,
        convert_to_iter_based=True,
    ),
    dict(
        type="CosineAnnealingMomentum",
        T_max=8,
        eta_min=0.85 / 0.95,
        begin=0,
        end=8,
        by_epoch=True,
        convert_to_iter_based=True,
    ),
    dict(
        type="CosineAnnealingMomentum", T_max=12, eta_min=1, begin=8, end=20, by_epoch=True, convert_to_iter_based=True
    ),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(enable=False, base_batch_size=16)

# "15e+5e" (official README): GT-paste off for the last 5 epochs (mmdet3d's hook finds CmtUnifiedObjectSample)
custom_hooks = [dict(type="DisableObjectSampleHook", disable_after_epoch=15)]
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(
    cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="nccl")
)
log_processor = dict(type="LogProcessor", window_size=50, by_epoch=True)
log_level = "INFO"
load_from = None
resume = False

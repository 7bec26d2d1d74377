# CMT tiny CPU config: every mechanism of the paper's fusion model (ray PE of image tokens, BEV PE of point tokens,
# position-guided 3D-anchor queries, PETR decoder over concatenated tokens, query denoising, focal+L1 Hungarian
# matching, NMS-free top-k decoding, masked-modality training, GridMask) with small sizes: ResNet-18 + CPFPN on
# 6 views at 64x160, a ±20.48 m range at 0.32 m voxels (16x16 BEV tokens), spconv SparseEncoder + SECOND + SECONDFPN,
# hidden 64, 2 decoder layers, 60 anchors, 16 depths. Random init (no download).
#
# Data: a nuScenes-style v2 info file. By default the one real sample in ../shared/data/nuscenes; override with
#   --cfg-options data_root=DIR/ (it reaches every dataloader; see packages/detection/README.md).
custom_imports = dict(imports=["polyzoo.detection.cmt.mmdet3d_plugin"], allow_failed_imports=False)
default_scope = "mmdet3d"

class_names = [
    "car", "truck", "trailer", "bus", "construction_vehicle",
    "bicycle", "motorcycle", "pedestrian", "traffic_cone", "barrier",
]  # fmt: skip
metainfo = dict(classes=class_names)
point_cloud_range = [-20.48, -20.48, -3.0, 20.48, 20.48, 3.0]
voxel_size = [0.32, 0.32, 0.15]
sparse_shape = [41, 128, 128]  # (z, y, x): 6 m / 0.15 + 1, 40.96 m / 0.32
image_size = (160, 64)  # (W, H)
num_views = 6
data_root = "../shared/data/nuscenes/"
ann_file = "n015-2018-07-24-11-22-45+0800.pkl"
input_modality = dict(use_lidar=True, use_camera=True)
cam_prefix = dict(
    pts="", CAM_FRONT="", CAM_FRONT_LEFT="", CAM_FRONT_RIGHT="", CAM_BACK="", CAM_BACK_LEFT="", CAM_BACK_RIGHT=""
)

model = dict(
    type="CmtDetector",
    use_grid_mask=True,
    data_preprocessor=dict(
        type="Det3DDataPreprocessor",
        voxel=True,
        voxel_type="hard",
        voxel_layer=dict(
            max_num_points=10, point_cloud_range=point_cloud_range, voxel_size=voxel_size, max_voxels=(16000, 40000)
        ),
        mean=[103.530, 116.280, 123.675],
        std=[57.375, 57.120, 58.395],
        bgr_to_rgb=False,
        pad_size_divisor=32,
    ),
    img_backbone=dict(
        type="mmdet.ResNet",
        depth=18,
        num_stages=4,
        out_indices=(2, 3),
        norm_cfg=dict(type="BN2d", requires_grad=True),
        norm_eval=False,
        style="pytorch",
        init_cfg=None,
    ),
    img_neck=dict(type="CPFPN", in_channels=[256, 512], out_channels=64, num_outs=2),
    pts_voxel_encoder=dict(type="HardSimpleVFE", num_features=5),
    pts_middle_encoder=dict(
        type="SparseEncoder",
        in_channels=5,
        sparse_shape=sparse_shape,
        base_channels=8,
        output_channels=32,
        order=("conv", "norm", "act"),
        encoder_channels=((8, 8, 16), (16, 16, 32), (32, 32, 32), (32, 32)),
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, [0, 1, 1]), (0, 0)),
        block_type="basicblock",
    ),
    pts_backbone=dict(
        type="SECOND",
        in_channels=64,
        out_channels=[32, 64],
        layer_nums=[1, 1],
        layer_strides=[1, 2],
        norm_cfg=dict(type="BN", eps=0.001, momentum=0.01),
        conv_cfg=dict(type="Conv2d", bias=False),
    ),
    pts_neck=dict(
        type="SECONDFPN",
        in_channels=[32, 64],
        out_channels=[32, 32],
        upsample_strides=[1, 2],
        norm_cfg=dict(type="BN", eps=0.001, momentum=0.01),
        upsample_cfg=dict(type="deconv", bias=False),
        use_conv_for_no_stride=True,
    ),
    pts_bbox_head=dict(
        type="CmtHead",
        in_channels=64,
        hidden_dim=64,
        num_query=60,
        depth_num=16,
        num_classes=len(class_names),
        pc_range=point_cloud_range,
        num_layers=2,
        num_heads=4,
        ffn_dim=128,
        dropout=0.1,
        head_conv=32,
        scalar=3,
        noise_scale=1.0,
        split=0.75,
        dn_weight=1.0,
        max_num=100,
        post_center_range=[-25.0, -25.0, -10.0, 25.0, 25.0, 10.0],
    ),
)

train_pipeline = [
    dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
    dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=num_views),
    dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type="CmtMultiViewResize", size=image_size),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectNameFilter", classes=class_names),
    dict(type="ModalMask3D", mode="train", p_image=0.25, p_points=0.25),
    dict(type="Pack3DDetInputs", keys=["points", "img", "gt_bboxes_3d", "gt_labels_3d"]),
]
test_pipeline = [
    dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
    dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=num_views),
    dict(type="CmtMultiViewResize", size=image_size),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    # set mask_modal="points" or "image" to test with one sensor missing
    dict(type="ModalMask3D", mode="test", mask_modal=None),
    dict(type="Pack3DDetInputs", keys=["points", "img"]),
]

train_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(
        type="CmtNuScenesDataset",
        data_root=data_root,
        ann_file=ann_file,
        pipeline=train_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        data_prefix=cam_prefix,
        test_mode=False,
        use_valid_flag=True,
        box_type_3d="LiDAR",
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="CmtNuScenesDataset",
        data_root=data_root,
        ann_file=ann_file,
        pipeline=test_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        data_prefix=cam_prefix,
        test_mode=True,
        box_type_3d="LiDAR",
    ),
)
test_dataloader = val_dataloader
# centre-distance AP at 0.5/1/2/4 m (NuScenesMetric needs the devkit database, not shipped with one sample)
val_evaluator = dict(type="CenterDistanceAP", thresholds=(0.5, 1.0, 2.0, 4.0))
test_evaluator = val_evaluator

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=1)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=200, val_interval=1000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
auto_scale_lr = dict(enable=False, base_batch_size=1)

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=100, by_epoch=False, max_keep_ckpts=2),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(
    cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="nccl")
)
log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)

# CMT fusion with ResNet-50 (junjie18/CMT projects/configs/fusion/cmt_voxel0100_r50_800x320_cbgs.py) in mmdet3d 1.x:
# ResNet-50 (out_indices 2, 3; with_cp) + CPFPN [1024, 2048], 800x320 images, 0.1 m voxels, AdamW lr 1.4e-4, cyclic
# peak x6. Paper: nuScenes val 67.9 mAP / 70.8 NDS.
# Sparse shape 41x1024x1024 (-> 128x128 BEV) as the official config, although 108 m / 0.1 m is 1080 cells: spconv
# drops voxels whose index is >= 1024 (measured with spconv 2.3.8), so the official model sees x, y < 48.4 m only,
# while the BEV positional encoding spreads its 128 cells over the full -54..54 m. The official weights were
# trained so; 1080 cannot train at all (SECONDFPN: 135 rows, and 68 x 2 = 136 after the stride-2 stage).
# The paper initialises the image branch from nuImages weights (nuim_r50.pth): point init_cfg at a local file.
_base_ = ["./cmt_voxel0075_vov_1600x640_cbgs.py"]

# the official class order (mmdet3d 1.0's nuScenes order, which official checkpoints predict); mmdet3d 1.x's
# NuScenesDataset maps its own label ids to this order through metainfo
class_names = [
    "car", "truck", "construction_vehicle", "bus", "trailer",
    "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone",
]  # fmt: skip
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.1, 0.1, 0.2]
image_size = (800, 320)
data_root = "data/nuscenes/"

model = dict(
    data_preprocessor=dict(voxel_layer=dict(voxel_size=voxel_size)),
    img_backbone=dict(
        _delete_=True,
        type="mmdet.ResNet",
        depth=50,
        num_stages=4,
        out_indices=(2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="BN2d", requires_grad=False),
        norm_eval=True,
        with_cp=True,
        style="pytorch",
        init_cfg=None,
    ),
    img_neck=dict(in_channels=[1024, 2048]),
    pts_middle_encoder=dict(sparse_shape=[41, 1024, 1024]),  # official (see the header)
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
    dict(type="ModalMask3D", mode="test", mask_modal=None),
    dict(type="Pack3DDetInputs", keys=["points", "img"]),
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1.4e-4))
param_scheduler = [
    dict(
        type="CosineAnnealingLR", T_max=8, eta_min=1.4e-4 * 6, begin=0, end=8, by_epoch=True, convert_to_iter_based=True
    ),
    dict(
        type="CosineAnnealingLR",
        T_max=12,
        eta_min=1.4e-4 * 1e-4,
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

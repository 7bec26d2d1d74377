# CMT on toy scenes (polyzoo.detection.cmt.toy_scenes): the tiny CPU config with 3 classes and 4 cameras at 64x160,
# used by the learning check (`polyzoo reproduce --quick --only detection`). Generate data with
#   uv run polyzoo detection toy-data OUT_DIR
# then train with tools/train.py and --cfg-options data_root=OUT_DIR/ (see packages/detection/README.md).
_base_ = ["./cmt_tiny_cpu.py"]

class_names = ["car", "pedestrian", "traffic_cone"]
metainfo = dict(classes=class_names)
num_views = 4
data_root = "data/cmt_toy/"
ann_file = "toy_infos.pkl"
point_cloud_range = [-20.48, -20.48, -3.0, 20.48, 20.48, 3.0]
image_size = (160, 64)

# a quarter-width ResNet-18 (stem/base 16 channels) and a lighter sparse encoder (one SparseBasicBlock per stage instead
# of two: 9 submanifold convolutions instead of 17, the same strides and output grid): the learning check must train
# in about a minute on 2 CPU cores. spconv's CPU path runs every submanifold convolution as 27 gather-matmul-scatter
# steps, which made the encoder about 60% of a training step.
model = dict(
    use_grid_mask=False,
    img_backbone=dict(base_channels=16, stem_channels=16),
    pts_middle_encoder=dict(
        encoder_channels=((8, 16), (16, 32), (32, 32), (32,)),
        encoder_paddings=((0, 1), (0, 1), (0, [0, 1, 1]), (0,)),
    ),
    img_neck=dict(in_channels=[64, 128]),
    pts_bbox_head=dict(num_classes=3, num_query=40, scalar=3, dropout=0.0),
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
    dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type="CmtMultiViewResize", size=image_size),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ModalMask3D", mode="test", mask_modal=None),
    dict(type="Pack3DDetInputs", keys=["points", "img", "gt_bboxes_3d", "gt_labels_3d"]),
]
_dataset = dict(
    data_root=data_root,
    ann_file=ann_file,
    metainfo=metainfo,
    data_prefix=dict(pts="", img=""),
)
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline, **_dataset))
# test_mode=False keeps the annotations, which the test pipeline packs for the centre-distance AP
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, test_mode=False, **_dataset))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_cfg = dict(max_iters=300, val_interval=300)

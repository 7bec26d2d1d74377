# RefT, COCO K-shot fine-tuning (gFSIS, K = 10 shown; change `shots`) from the 60-class base model.
# The fine-tuning set is the merge of the TFA-style files seed{seed}/full_box_{K}shot_{name}_trainval.json of all 80
# classes (polyzoo.detection.reft.protocols.load_finetune_annotations(..., "gfsis", ...) writes it as one COCO json);
# for FSIS use the "fsis" setting (novel files only), for iFSIS the "ifsis" setting plus
# model.distill=dict(base_class_ids=[...]) and RefT.attach_teacher(base model) (see the package README).
# Fine-tuning schedule (ours; the RefT text we could read gives none): the base model's optimiser with lr 1e-5
# (x0.1), 4000 iterations at batch 8 for K = 10 (TFA-style: iterations scale with K), support episodes drawn from the
# K-shot set itself. The class head is re-initialised for 80 classes (load the base checkpoint with strict=False).
_base_ = "./reft_r50_coco_base60.py"

shots = 10
seed = 0
num_classes = 80
model = dict(
    panoptic_head=dict(num_things_classes=num_classes, loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_classes),
)
train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            metainfo=dict(classes={{_base_.ALL_CLASSES}}),
            ann_file="annotations/few_shot/seed0_10shot_gfsis.json",
        )
    )
)
val_dataloader = dict(dataset=dict(metainfo=dict(classes={{_base_.ALL_CLASSES}})))
val_evaluator = [
    dict(type="CocoMetric", ann_file="data/coco/annotations/instances_val2017.json", metric=["bbox", "segm"]),
    dict(
        type="FewShotCocoMetric",
        ann_file="data/coco/annotations/instances_val2017.json",
        classes={{_base_.ALL_CLASSES}},
    ),
]
test_evaluator = val_evaluator
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-5))
max_iters = 4000
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
param_scheduler = dict(type="MultiStepLR", begin=0, end=max_iters, by_epoch=False, milestones=[3000], gamma=0.1)
# evaluation references: the support bank of the K-shot fine-tuning set itself
custom_hooks = [
    dict(
        type="RefTSupportBankHook",
        batch_size=2,
        support_dataset=dict(
            type="CocoDataset",
            data_root="data/coco/",
            metainfo=dict(classes={{_base_.ALL_CLASSES}}),
            ann_file="annotations/few_shot/seed0_10shot_gfsis.json",
            data_prefix=dict(img="train2017/"),
            pipeline={{_base_.support_pipeline}},
        ),
    )
]

# A CPU demo of the detection config: Cascade Mask R-CNN-PeLK-T trained from
# scratch on the small synthetic COCO (tools/dataset_converters/
# generate_dataset.py coco). It inherits the real config and changes what a
# CPU run needs: 3 classes, native-size images (150x120, not multiples of
# 32: the data preprocessor pads), BN, lighter RoI heads and fewer RoIs,
# no ImageNet file (so a higher lr, no layer decay, a short warm-up), 12
# epochs, half of the sampled RoIs positive where possible.
# From scratch, every part gets a norm layer, as He et al. ("Rethinking
# ImageNet Pre-training", ICCV 2019) train detectors without pretraining:
# here the FPN and the mask head (BN), and no drop path. Without them the
# RPN's shared conv died within the first epochs (its ReLU gave zeros over
# whole FPN levels, so the test-time proposals were anchors at one score)
# and box AP stayed at 0.004-0.010.
_base_ = '../cascade_mask_rcnn_pelk_t_coco.py'

data_root = 'data/coco_synthetic/'
metainfo = dict(classes=('disc', 'square', 'triangle'))
num_classes = 3
norm_cfg = dict(type='BN', requires_grad=True)
max_epochs = 12

model = dict(
    backbone=dict(drop_path_rate=0.0, mixer_norm_cfg=norm_cfg, init_cfg=None),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=256,
                conv_out_channels=64,
                fc_out_channels=256,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=norm_cfg,
                loss_cls=dict(
                    type='CrossEntropyLoss',
                    use_sigmoid=False,
                    loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                         [0.033, 0.033, 0.067, 0.067])
        ],
        mask_head=dict(
            num_classes=num_classes, conv_out_channels=64, norm_cfg=norm_cfg)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=[
            dict(
                assigner=dict(
                    type='MaxIoUAssigner',
                    pos_iou_thr=iou,
                    neg_iou_thr=iou,
                    min_pos_iou=iou,
                    match_low_quality=False,
                    ignore_iof_thr=-1),
                sampler=dict(
                    type='RandomSampler',
                    num=64,
                    pos_fraction=0.5,
                    neg_pos_ub=-1,
                    add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in (0.5, 0.6, 0.7)
        ]),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(150, 120), keep_ratio=True),
]
train_pipeline = pipeline + [
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = pipeline + [
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# From scratch there is nothing to protect: no layer-wise lr decay. The lr
# is for this batch of 4: no rescaling to the recipe's batch of 16.
optim_wrapper = dict(
    optimizer=dict(lr=1e-3), paramwise_cfg=dict(decay_rate=1.0))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[10],
        gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
# From scratch there are no ImageNet zeros to keep: no sparsity hook.
custom_hooks = [dict(type='pelk_mm.ProgressBarHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)

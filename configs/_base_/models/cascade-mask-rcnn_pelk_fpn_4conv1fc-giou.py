# Cascade Mask R-CNN with FPN and 4conv1fc GIoU box heads, PeLK-T, as SLaK's
# cascade_mask_rcnn_slak_tiny_*_3x_coco_in1k.py: SyncBN in the box heads and
# in the backbone's own BN layers (SLaK builds them as SyncBatchNorm);
# tools/train.py builds them as BN on a machine without a GPU.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)

# Written by tools/model_converters/cls_to_backbone.py (keys 'backbone.*').
checkpoint_file = 'checkpoints/pelk_t_in1k_backbone.pth'
head_norm_cfg = dict(type='SyncBN', requires_grad=True)
num_classes = 80
model = dict(
    backbone=dict(
        _delete_=True,
        type='pelk_mm.PeLK',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1e-6,
        mixer_norm_cfg=head_norm_cfg,
        gap_before_final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(in_channels=[124, 249, 499, 998]),
    roi_head=dict(
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=head_norm_cfg,
                loss_cls=dict(
                    type='CrossEntropyLoss',
                    use_sigmoid=False,
                    loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                         [0.033, 0.033, 0.067, 0.067])
        ],
        mask_head=dict(num_classes=num_classes)))

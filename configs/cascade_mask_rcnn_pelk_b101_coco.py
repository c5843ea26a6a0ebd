# PeLK-B-101: kernels [101, 69, 67, 13] with a 7x7 dense centre.
_base_ = './cascade_mask_rcnn_pelk_b_coco.py'
model = dict(
    backbone=dict(
        arch='base-101',
        init_cfg=dict(
            checkpoint='checkpoints/pelk_b101_in1k-384_backbone.pth')))

# PeLK-B-101: kernels [101, 69, 67, 13] with a 7x7 dense centre.
_base_ = './upernet_pelk_b_ade20k.py'
model = dict(
    backbone=dict(
        arch='base-101',
        init_cfg=dict(
            checkpoint='checkpoints/pelk_b101_in1k-384_backbone.pth')))

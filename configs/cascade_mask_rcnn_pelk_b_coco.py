_base_ = './cascade_mask_rcnn_pelk_t_coco.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.7,
        init_cfg=dict(checkpoint='checkpoints/pelk_b_in1k_backbone.pth')),
    neck=dict(in_channels=[166, 332, 665, 1331]))
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.8))

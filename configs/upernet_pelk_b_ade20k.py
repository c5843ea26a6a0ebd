_base_ = './upernet_pelk_t_ade20k.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/pelk_b_in1k_backbone.pth')),
    decode_head=dict(in_channels=[166, 332, 665, 1331]),
    auxiliary_head=dict(in_channels=665))

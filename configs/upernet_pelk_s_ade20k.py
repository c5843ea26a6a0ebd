_base_ = './upernet_pelk_t_ade20k.py'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/pelk_s_in1k_backbone.pth')))

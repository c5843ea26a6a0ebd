_base_ = './cascade_mask_rcnn_pelk_t_coco.py'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.6,
        init_cfg=dict(checkpoint='checkpoints/pelk_s_in1k_backbone.pth')))

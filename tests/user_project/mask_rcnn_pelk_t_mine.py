# A user's own config, outside pelk_mm: mmdet's stock Mask R-CNN (COCO, 1x)
# with PeLK-T in place of ResNet-50, and PeLK's detection schedule (AdamW,
# layer-wise lr decay; README, "Use it from your config").
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
from pelk_mm.recipes import recipe_part, stage_widths  # noqa: E402

custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
model = dict(
    backbone=recipe_part('cascade_mask_rcnn_pelk_t_coco.py', 'model.backbone'),
    neck=dict(in_channels=stage_widths('tiny')))
optim_wrapper = recipe_part('cascade_mask_rcnn_pelk_t_coco.py',
                            'optim_wrapper')

# A user's own config, outside pelk_mm: mmseg's stock UperNet (ADE20K,
# 160k iterations) with PeLK-T in place of ResNet-50, PeLK's schedule (AdamW,
# stage-wise lr decay) and its sparse-backbone setting (README, "Use it from
# your config").
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
from pelk_mm.recipes import recipe_part, stage_widths  # noqa: E402

custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,  # the stock model's ResNet-50 weights
    backbone=recipe_part('upernet_pelk_t_ade20k.py', 'model.backbone'),
    decode_head=dict(in_channels=stage_widths('tiny')),
    auxiliary_head=dict(in_channels=stage_widths('tiny')[2]))
optim_wrapper = recipe_part('upernet_pelk_t_ade20k.py', 'optim_wrapper')
param_scheduler = recipe_part('upernet_pelk_t_ade20k.py', 'param_scheduler')
custom_hooks = recipe_part('upernet_pelk_t_ade20k.py', 'custom_hooks')

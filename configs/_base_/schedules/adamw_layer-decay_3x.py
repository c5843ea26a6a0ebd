# SLaK's Cascade Mask R-CNN 3x recipe
# (cascade_mask_rcnn_slak_tiny_*_mstrain_480-800_giou_4conv1f_adamw_3x_coco_in1k
# .py, itself ConvNeXt's), which PeLK follows:
# - AdamW, lr 2e-4 for batch 16, betas (0.9, 0.999), weight decay 0.05;
#   auto_scale_lr enabled with base batch 16, as SLaK (the lr follows the
#   total batch size actually used);
# - no weight decay on 1-D parameters and biases, as SLaK's constructor; the
#   positional embedding exempt too (the paper is silent; ViT practice);
# - layer-wise lr decay by ConvNeXt's rule (mmdet's
#   get_layer_id_for_convnext, num_layers 6 for T and 12 for S and B):
#   0.7 for T and S, 0.8 for B (ConvNeXt's values);
# - linear warm-up over 500 iterations from 0.001 (the 1x schedule SLaK's
#   config builds on), 36 epochs with steps at 27 and 33.
_base_ = ['mmdet::_base_/schedules/schedule_1x.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='pelk_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        decay_rate=0.7,
        decay_type='layer_wise',
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=True, base_batch_size=16)

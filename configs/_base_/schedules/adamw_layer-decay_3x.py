# The ConvNeXt/SLaK Cascade Mask R-CNN 3x recipe: AdamW, layer-wise lr
# decay, linear warm-up, 36 epochs with steps at 27 and 33.
_base_ = ['mmdet::_base_/schedules/schedule_1x.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='pelk_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise'))

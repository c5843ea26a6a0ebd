# SLaK's UperNet recipe (upernet_slak_{tiny,small,base}_512_160k_ade20k_ss.py,
# itself ConvNeXt's), which PeLK follows:
# - AdamW, lr 1e-4 for batch 16, betas (0.9, 0.999), weight decay 0.05;
# - no weight decay on 1-D parameters and biases (norm weights and biases,
#   layer scales, conv and linear biases), as SLaK's constructor; the paper
#   is silent on the kernel-wise positional embedding: exempt too, as ViTs
#   exempt theirs (custom_keys below);
# - stage-wise lr decay 0.9 by ConvNeXt's rule (mmseg's
#   get_stage_id_for_convnext, num_layers 6 for T and 12 for S and B, taken
#   from the backbone's depths): stage i gets 0.9 ** (num_layers - i), every
#   downsampling layer 0.9 ** (num_layers + 1), the heads 1;
# - linear warm-up over 1500 iterations from 1e-6, then poly (power 1) to 0,
#   160k iterations; a checkpoint every 8000 and mIoU every 4000 iterations.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='pelk_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=1500,
        end=160000),
]
train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000))

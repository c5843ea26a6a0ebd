# PeLK-T on ImageNet-1k, 300 epochs at 224. The paper follows SLaK, which
# follows ConvNeXt; this is mmpretrain's ConvNeXt recipe
# (convnext-tiny_32xb128_in1k.py) with SLaK's settings for PeLK-T (SLaK's
# README command for SLaK-T):
# - AdamW, lr 4e-3 for batch 4096 (32 GPUs x 128), weight decay 0.05, none
#   on norms, biases, layer scales and other 1-D parameters (mmpretrain);
#   the positional embedding exempt too (the paper is silent; ViT practice);
# - 20 warm-up epochs, then a cosine to 1e-6 (ConvNeXt's min_lr), both
#   stepped every iteration as ConvNeXt's and SLaK's training code do
#   (mmpretrain's base schedule steps its cosine per epoch, to 1e-5);
# - RandAugment m9, mixup 0.8, cutmix 1.0, label smoothing 0.1, random
#   erasing 0.25, EMA 0.9999, drop path 0.1 (SLaK-T);
# - SLaK's dynamic sparsity: 40% of every conv and linear weight (the head
#   included), SNIP init, prune rate 0.5 every 2000 iterations, random
#   growth.
# The lr is for a total batch of 4096: with another batch size, pass
# --auto-scale-lr to tools/train.py (as mmpretrain's) to scale it linearly.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='pelk_mm.PeLK', arch='tiny', drop_path_rate=0.1),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=998,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None),
    init_cfg=dict(
        type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02, bias=0.),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

max_epochs = 300
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(lr=4e-3),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=None)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=20,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=20,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
# pelk_mm's own: checkpoints written crash-safe (temporary file, rename,
# then rotation) with the random generators' states, so that a resumed run
# goes on as the uninterrupted one, and a stop at the first NaN/Inf loss
# before it is saved.
default_hooks = dict(
    checkpoint=dict(type='pelk_mm.AtomicCheckpointHook'),
    random_state=dict(type='pelk_mm.RandomStateHook'),
    finite_loss=dict(type='pelk_mm.FiniteLossHook'))
custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(
        type='pelk_mm.DynamicSparsityHook',
        sparsity=0.4,
        sparse_init='snip',
        growth='random',
        prune_rate=0.5,
        update_interval=2000),
]
auto_scale_lr = dict(base_batch_size=4096)

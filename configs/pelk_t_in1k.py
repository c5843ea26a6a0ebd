# PeLK-T on ImageNet-1k, 300 epochs at 224, the ConvNeXt/SLaK recipe:
# AdamW lr 4e-3 for batch 4096 (32 GPUs x 128; auto_scale_lr rescales),
# weight decay 0.05, 20 warm-up epochs, cosine to 1e-6, RandAugment m9,
# mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25, EMA,
# and SLaK's dynamic sparsity (40%, SNIP init, random growth).
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

train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=4e-3), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=20),
]
custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(type='pelk_mm.DynamicSparsityHook', sparsity=0.4,
         sparse_init='snip', growth='random', prune_rate=0.5,
         update_interval=2000),
]
auto_scale_lr = dict(base_batch_size=4096)

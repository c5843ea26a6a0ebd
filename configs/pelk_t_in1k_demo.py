# A CPU demo of the ImageNet config: PeLK-T on the small synthetic ImageNet
# (tools/dataset_converters/generate_dataset.py imagenet: 6 texture classes,
# 64x64). It inherits the real config and changes what a CPU run needs:
# 6 classes, 64 crops without RandAugment, mixup or erasing (a few epochs
# cannot learn through them), batch 32 with a matching lr, a faster EMA,
# and sparsity updates every 20 iterations so that they happen.
_base_ = './pelk_t_in1k.py'

data_root = 'data/imagenet_synthetic'
max_epochs = 12
data_preprocessor = dict(num_classes=6)
model = dict(head=dict(num_classes=6), train_cfg=dict(augments=None))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0),
         backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [
    dict(type='EMAHook', momentum=0.02, priority='ABOVE_NORMAL'),
    dict(type='pelk_mm.DynamicSparsityHook', sparsity=0.4,
         sparse_init='snip', growth='random', prune_rate=0.5,
         update_interval=20),
    dict(type='pelk_mm.ProgressBarHook'),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False)
randomness = dict(seed=0)

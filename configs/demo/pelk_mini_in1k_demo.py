# A CPU demo of the ImageNet recipe: a reduced PeLK on the small synthetic
# ImageNet (tools/dataset_converters/generate_dataset.py imagenet: 6 texture
# classes, 100 + 20 images each, 64x64). PeLK-T itself (18 blocks, 28M
# parameters) does not learn in the few hundred iterations a CPU test can
# afford, so the backbone keeps PeLK-T's kernels [51, 49, 47, 13], grids,
# positional embeddings, partial 3/8 peripheral convs and 5x5 branches at
# depths [2, 2, 4, 2] and widths [64, 128, 256, 512]. From the real config
# it keeps the classifier, label smoothing, EMA and dynamic sparsity; it
# drops RandAugment, mixup and erasing (a few epochs cannot learn through
# them), and uses batch 32 with a higher lr for the short schedule, a faster
# EMA, and sparsity updates every 50 iterations (prune rate 0.2) so that a
# few happen without undoing what the model learns between them.
_base_ = '../pelk_t_in1k.py'

demo_arch = dict(
    depths=[2, 2, 4, 2],
    channels=[64, 128, 256, 512],
    kernel_sizes=[51, 49, 47, 13])
data_root = 'data/imagenet_synthetic'
# The six texture classes (pelk_mm.synthetic.TEXTURE_CLASSES), so that
# checkpoints, Inferencers and tools name them.
metainfo = dict(
    classes=('horizontal', 'vertical', 'diagonal', 'checks', 'rings', 'dots'))
max_epochs = 20
data_preprocessor = dict(num_classes=6)
model = dict(
    backbone=dict(
        _delete_=True, type='pelk_mm.PeLK', arch=demo_arch,
        drop_path_rate=0.1),
    head=dict(num_classes=6, in_channels=512),
    train_cfg=dict(augments=None))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=64,
        crop_ratio_range=(0.5, 1.0),
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
    batch_size=32,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [
    dict(type='EMAHook', momentum=0.02, priority='ABOVE_NORMAL'),
    dict(
        type='pelk_mm.DynamicSparsityHook',
        sparsity=0.4,
        sparse_init='snip',
        growth='random',
        prune_rate=0.2,
        update_interval=50),
    dict(type='pelk_mm.ProgressBarHook'),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False)
randomness = dict(seed=0)

# PeLK-B at 384 (the paper: 85.6 top-1, 54.0G), fine-tuned from the 224
# classifier of pelk_b_in1k.py. The paper does not give this recipe; it is
# ConvNeXt's 384 fine-tuning: 30 epochs, AdamW lr 5e-5 for batch 512
# (--auto-scale-lr to rescale), weight decay 1e-8, no warm-up, cosine to
# 1e-6 stepped per iteration, RandAugment m9, random erasing 0.25, label
# smoothing 0.1, no mixup or cutmix, drop path 0.8, no EMA. The 224 model is
# 40% sparse: its masks (saved in the checkpoint) stay fixed (prune rate 0;
# were they missing, the non-zeros of the loaded weights would be the
# masks), so the model stays as sparse as the paper counts it.
_base_ = './pelk_b_in1k.py'

# The 224 checkpoint (its head is reused: the same 1000 classes).
load_from = 'work_dirs/pelk_b_in1k/epoch_300.pth'

model = dict(backbone=dict(drop_path_rate=0.8), train_cfg=dict(augments=None))

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=384,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
# ConvNeXt evaluates 384 models on the whole resized image (crop ratio 1).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=5e-5, weight_decay=1e-8))
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=0,
        end=30,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
custom_hooks = [
    dict(
        type='pelk_mm.DynamicSparsityHook',
        sparsity=0.4,
        sparse_init='nonzero',
        prune_rate=0.0),
]
auto_scale_lr = dict(base_batch_size=512)

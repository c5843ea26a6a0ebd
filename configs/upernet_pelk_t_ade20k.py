# UperNet-PeLK-T on ADE20K, 160k iterations, batch 16 (8 GPUs x 2), 512 crop.
_base_ = [
    './_base_/models/upernet_pelk.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_stage-decay_160k.py',
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
# Set enable=True (and keep base_batch_size) to scale the lr when training
# with another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# UperNet-PeLK-T on ADE20K, 160k iterations, batch 16 (8 GPUs x 2), 512 crop.
_base_ = [
    './_base_/models/upernet_pelk.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_stage-decay_160k.py',
    './_base_/sparse_backbone.py',
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
# SLaK's recipe has no lr scaling; pass --auto-scale-lr to tools/train.py to
# scale the lr linearly from this total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
# pelk_mm's own run hardening (not the method; configs are where mmengine
# lets default_hooks be added to, as no two bases may both set them):
# checkpoints written crash-safe (temporary file, rename, then rotation)
# with the random generators' states, so that a resumed run goes on as the
# uninterrupted one; a stop at the first NaN/Inf loss before it is saved;
# and an annotation value that is not one of the 150 classes stops the run
# naming the file (else: a wrong mIoU, or an IndexError).
default_hooks = dict(
    checkpoint=dict(type='pelk_mm.AtomicCheckpointHook'),
    random_state=dict(type='pelk_mm.RandomStateHook'),
    finite_loss=dict(type='pelk_mm.FiniteLossHook'),
    seg_labels=dict(type='pelk_mm.SegLabelCheckHook'))

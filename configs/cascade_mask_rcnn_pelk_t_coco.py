# Cascade Mask R-CNN-PeLK-T on COCO, 3x (36 epochs), batch 16 (8 GPUs x 2),
# multi-scale training with random crop.
_base_ = [
    './_base_/models/cascade-mask-rcnn_pelk_fpn_4conv1fc-giou.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/adamw_layer-decay_3x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/sparse_backbone.py',
]
# pelk_mm's own: checkpoints written crash-safe (temporary file, rename,
# then rotation) with the random generators' states, so that a resumed run
# goes on as the uninterrupted one, a stop at the first NaN/Inf loss before
# it is saved, and a refusal to start on a GPU with an mmcv built without
# CUDA ops (RoIAlign and NMS would fail in the first iteration).
default_hooks = dict(
    checkpoint=dict(type='pelk_mm.AtomicCheckpointHook'),
    random_state=dict(type='pelk_mm.RandomStateHook'),
    finite_loss=dict(type='pelk_mm.FiniteLossHook'),
    mmcv_ops=dict(type='pelk_mm.MMCVOpsCheckHook'))

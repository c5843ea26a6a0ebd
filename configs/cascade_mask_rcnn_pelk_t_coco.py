# Cascade Mask R-CNN-PeLK-T on COCO, 3x (36 epochs), batch 16 (8 GPUs x 2),
# multi-scale training with random crop.
_base_ = [
    './_base_/models/cascade-mask-rcnn_pelk_fpn_4conv1fc-giou.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/adamw_layer-decay_3x.py',
    'mmdet::_base_/default_runtime.py',
]

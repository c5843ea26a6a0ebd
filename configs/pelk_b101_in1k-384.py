# PeLK-B-101 at 384 (the paper: 85.8 top-1, 68.3G): kernels
# [101, 69, 67, 13] with a 7x7 dense centre, fine-tuned with the recipe of
# pelk_b_in1k-384.py from the PeLK-B-101 trained at 224 by
# pelk_b101_in1k.py.
_base_ = './pelk_b_in1k-384.py'

load_from = 'work_dirs/pelk_b101_in1k/epoch_300.pth'
model = dict(backbone=dict(arch='base-101'))

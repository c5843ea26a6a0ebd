# PeLK-B-101 at 384 (the paper: 85.8 top-1, 68.3G): kernels
# [101, 69, 67, 13] with a 7x7 dense centre, fine-tuned with the recipe of
# pelk_b_in1k-384.py. The paper gives no 224 PeLK-B-101, so this starts from
# the 224 PeLK-B classifier with its kernels re-gridded 51 -> 101 (and 49 ->
# 69, 47 -> 67, the 13s onto the 7x7-centre grid) on loading
# (kernel_resize='pad': each tap stays where it was, zeros beyond; see
# pelk_mm/ops/regrid.py). To start from a PeLK-B-101 trained at 224, train
# pelk_b_in1k.py with backbone.arch='base-101' and point load_from at it.
_base_ = './pelk_b_in1k-384.py'

model = dict(backbone=dict(arch='base-101', kernel_resize='pad'))

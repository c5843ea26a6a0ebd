#!/usr/bin/env bash
# pelk_mm in the environments users already have, beside the pinned stack
# of `make install` (README, "Tested versions"). Each environment is a venv
# of its own, ~/.cache/pelk_mm/venv-ENV, made once and brought up to date
# by each run (only what is missing or of another version is installed),
# and shared by the clones of this user (3-4 GB each: torch and its CUDA
# libraries; a run holds its venv's lock, so two clones take turns); pip's
# wheel cache is one per environment (~/.cache/pelk_mm/pip-ENV), so that
# mmcv is built once per torch and a wheel built against one torch is never
# installed on another.
#
#   openmmlab  torch 2.1.2 + mmcv 2.1.0 (compiled ops) + mmengine 0.10.7 +
#              mmdet 3.3.0 + mmseg 1.2.2 + mmpretrain 1.2.0, numpy < 2, openmim
#              (the environment OpenMMLab's install guides make). pelk_mm's
#              wheel is installed as a user would (pip must plan nothing
#              else); then the quick part of the suite, and, from a folder
#              outside the clone, with the stock tools of mmseg, mmdet and
#              mmpretrain: 2 training iterations + test of each task's demo
#              config and of the user configs in tests/user_project/ (stock
#              UperNet and Mask R-CNN with PeLK-T and PeLK's schedule);
#              `mim train pelk_mm` and `mim run pelk_mm` on the demo.
#   newest     the newest torch on PyPI (pip's constraint file, if this
#              machine has one, is not applied), mmengine 0.10.7 and
#              mmcv-lite 2.1.0 (mmcv without compiled ops): mmcv 2.1.0's ops
#              do not build there (torch >= 2.14's headers need C++20, which
#              mmcv's build does not ask for), and mmdet, mmseg and
#              mmpretrain need them. The op and backbone tests.
#
# Usage: bash tools/test_matrix.sh [openmmlab] [newest]   (default: both)
# Environment: PYTHON (default python3.11), MAX_JOBS (mmcv's build),
#              TEST_WORKERS (pytest-xdist's, as `make test`'s).
set -euo pipefail
{
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
START=$(date +%s)
# The suite as `make test` runs it, in the Makefile's TEST_WORKERS.
XDIST="-n ${TEST_WORKERS:-2} --dist loadgroup"
log() { printf '[matrix %4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }

# venv NAME CACHE: makes ~/.cache/pelk_mm/venv-NAME where there is none,
# holds its lock until this script ends, and points PY at it, with pip's
# cache ~/.cache/pelk_mm/pip-CACHE.
venv() {
  local cache="$HOME/.cache/pelk_mm"
  VENV="$cache/venv-$1"
  PY="$VENV/bin/python"
  export PIP_CACHE_DIR="$cache/pip-$2"
  mkdir -p "$cache"
  exec {lock}>"$VENV.lock"
  flock "$lock"
  [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
}
ok() { "$PY" - >/dev/null 2>&1 <<<"$1"; }
pip_install() {
  "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | grep -v '^WARNING: Location' || true
  [ "${PIPESTATUS[0]}" = 0 ]
}

# mmcv 2.1.0 with its compiled CPU ops, built against this venv's torch.
install_mmcv() {
  if ! ok "import mmcv.ops, sys; sys.exit(__import__('mmcv').__version__ != '2.1.0')"; then
    log "building mmcv 2.1.0 with CPU ops (6-19 minutes once, then cached)"
    env MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
      "$PY" -m pip install -q --disable-pip-version-check \
      --no-build-isolation mmcv==2.1.0 2>&1 | grep -v '^WARNING: Location' \
      || true
  fi
  ok 'import mmcv.ops'
}

# The suite's runner, as `make install` installs it.
install_pytest() { VENV="$VENV" bash "$ROOT/tools/install.sh" --test-runner; }

build_wheel() {
  rm -rf build/matrix-wheel
  "$PY" -m pip wheel -q --no-deps --no-build-isolation . -w build/matrix-wheel \
    2>&1 | grep -v '^WARNING: Location' || true
  WHEEL="$(ls "$ROOT"/build/matrix-wheel/pelk_mm-*.whl)"
}

openmmlab() {
  log "openmmlab: torch 2.1.2 + mmcv 2.1.0 + mmdet 3.3.0 + mmseg 1.2.2 + mmpretrain 1.2.0"
  venv openmmlab torch2.1.2
  ok 'import setuptools, wheel, ninja' || pip_install 'setuptools<82' wheel ninja
  ok 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.1.2")' \
    || pip_install torch==2.1.2 torchvision==0.16.2 'numpy<2'
  ok 'import mmengine' || pip_install mmengine==0.10.7 'opencv-python<5' 'numpy<2'
  install_mmcv
  install_pytest
  ok 'import mmdet, mmseg, mmpretrain, mim, onnx' || pip_install \
    mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0 ftfy regex \
    openmim onnx==1.23.2 onnxruntime==1.32.0 'numpy<2' 'pandas<3' \
    'opencv-python<5'

  build_wheel
  "$PY" -m pip uninstall -q -y pelk_mm >/dev/null 2>&1 || true
  local plan
  plan="$("$PY" -m pip install --dry-run --disable-pip-version-check "$WHEEL" \
    2>/dev/null | grep '^Would install' || true)"
  if [ "$plan" != "Would install pelk-mm-0.1.0" ]; then
    echo "matrix: installing pelk_mm's wheel would change the environment:" \
         "'$plan'" >&2
    exit 1
  fi
  log "pip plans the wheel alone: $plan"
  pip_install --no-deps "$WHEEL"

  log "openmmlab: the quick part of the suite"
  "$PY" -m pytest -q -m "not slow" -p no:cacheprovider $XDIST \
    --ignore=tests/test_tools/test_lint.py

  log "openmmlab: the stock tools, outside the clone"
  local work site
  work="$(mktemp -d)"
  site="$("$PY" -c 'import os, mmdet; print(os.path.dirname(os.path.dirname(mmdet.__file__)))')"
  cp tests/user_project/*.py "$work"
  (
    cd "$work"
    export PATH="$VENV/bin:$PATH"
    mim run pelk_mm generate_dataset ade20k data/ade_synthetic >/dev/null
    mim run pelk_mm generate_dataset coco data/coco_synthetic >/dev/null
    mim run pelk_mm generate_dataset imagenet data/imagenet_synthetic >/dev/null
    demos="$site/pelk_mm/.mim/configs/demo"
    ade=data/ade_synthetic/ADEChallengeData2016
    coco=data/coco_synthetic/ classes="('disc','square','triangle')"
    # Two lanes at once, a core and a thread each (each run is mostly one
    # process's start-up on one core); a lane stops at its first failure,
    # showing its log.
    export OMP_NUM_THREADS=1
    {
      two_iterations seg upernet_pelk_t_mine.py \
        model.backbone.init_cfg=None train_cfg.max_iters=2 \
        train_cfg.val_interval=2 default_hooks.checkpoint.interval=2 \
        train_dataloader.batch_size=2 "train_dataloader.dataset.data_root=$ade" \
        "val_dataloader.dataset.data_root=$ade" \
        "test_dataloader.dataset.data_root=$ade" \
        val_dataloader.dataset.indices=2 test_dataloader.dataset.indices=2
      two_iterations det "$demos/cascade_mask_rcnn_pelk_t_coco_demo.py" \
        train_cfg.max_epochs=1 train_dataloader.dataset.indices=4 \
        val_dataloader.dataset.indices=2
    } &
    lanes=("$!")
    {
      two_iterations seg "$demos/upernet_pelk_t_ade20k_demo.py" \
        train_cfg.max_iters=2 train_cfg.val_interval=2 \
        default_hooks.checkpoint.interval=2 val_dataloader.dataset.indices=2
      two_iterations det mask_rcnn_pelk_t_mine.py \
        model.backbone.init_cfg=None train_cfg.max_epochs=1 \
        train_dataloader.dataset.indices=4 train_dataloader.batch_size=2 \
        "train_dataloader.dataset.data_root=$coco" \
        "train_dataloader.dataset.metainfo.classes=$classes" \
        "train_dataloader.dataset.pipeline.2.scale=(160,128)" \
        "val_dataloader.dataset.data_root=$coco" \
        "val_dataloader.dataset.metainfo.classes=$classes" \
        "val_dataloader.dataset.pipeline.1.scale=(160,128)" \
        val_dataloader.dataset.indices=2 \
        "val_evaluator.ann_file=${coco}annotations/instances_val2017.json" \
        "test_dataloader.dataset.data_root=$coco" \
        "test_dataloader.dataset.metainfo.classes=$classes" \
        "test_dataloader.dataset.pipeline.1.scale=(160,128)" \
        test_dataloader.dataset.indices=2 \
        "test_evaluator.ann_file=${coco}annotations/instances_val2017.json"
      mim_train_and_test
      two_iterations cls "$demos/pelk_mini_in1k_demo.py" \
        train_cfg.max_epochs=1 train_dataloader.dataset.indices=8 \
        train_dataloader.batch_size=4 val_dataloader.dataset.indices=4
    } &
    lanes+=("$!")
    failed=0
    for lane in "${lanes[@]}"; do wait "$lane" || failed=1; done
    [ "$failed" = 0 ]
  )
  rm -rf "$work"
  log "openmmlab: passed"
}

# `mim train pelk_mm` then `mim test pelk_mm` on the segmentation demo
# (2 iterations), from the folder the stock tools run in.
mim_train_and_test() {
  log "mim train + mim test pelk_mm upernet_pelk_t_ade20k_demo.py"
  mim train pelk_mm upernet_pelk_t_ade20k_demo.py --gpus 0 --work-dir mim \
    --cfg-options train_cfg.max_iters=2 train_cfg.val_interval=2 \
    default_hooks.checkpoint.interval=2 val_dataloader.dataset.indices=2 \
    > mim.log 2>&1 || { tail -40 mim.log; exit 1; }
  [ -f mim/iter_2.pth ]
  mim test pelk_mm upernet_pelk_t_ade20k_demo.py --checkpoint mim/iter_2.pth \
    --gpus 0 --work-dir mim/test \
    --cfg-options test_dataloader.dataset.indices=2 \
    > mim-test.log 2>&1 || { tail -40 mim-test.log; exit 1; }
  grep -q 'mIoU:' mim-test.log
}

# two_iterations TASK CONFIG OPTION...: the task's own tools/train.py (2
# iterations, or one epoch of a few images), then its tools/test.py on the
# checkpoint, with the options; each log is shown where it fails.
two_iterations() {
  local task="$1" config="$2" package tools name checkpoint saved
  shift 2
  case "$task" in
    seg) package=mmseg ;;
    det) package=mmdet ;;
    cls) package=mmpretrain ;;
  esac
  tools="$site/$package/.mim/tools"
  name="$(basename "$config" .py)"
  log "$package tools/train.py + tools/test.py: $name"
  python "$tools/train.py" "$config" --work-dir "runs/$name" \
    --cfg-options "$@" > "runs-$name.log" 2>&1 \
    || { tail -40 "runs-$name.log"; exit 1; }
  checkpoint=""
  for saved in runs/"$name"/iter_2.pth runs/"$name"/epoch_1.pth; do
    [ -f "$saved" ] && checkpoint="$saved"
  done
  [ -n "$checkpoint" ] || { echo "matrix: $name saved no checkpoint" >&2; exit 1; }
  python "$tools/test.py" "$config" "$checkpoint" \
    --work-dir "runs/$name/test" --cfg-options "$@" > "test-$name.log" 2>&1 \
    || { tail -40 "test-$name.log"; exit 1; }
}

newest() {
  venv torch-newest torch-newest
  log "newest: the newest torch on PyPI"
  # The newest release, whatever this machine's pip constraints cap; then
  # a setuptools with pkg_resources (torch's own pin may lift it), which
  # mmengine's `mmseg::`-style bases import.
  PIP_CONSTRAINT=/dev/null pip_install --upgrade torch torchvision
  pip_install 'setuptools<82' wheel ninja
  ok 'import mmengine' || pip_install mmengine==0.10.7 'opencv-python<5'
  install_pytest
  ok 'import mmcv' || pip_install mmcv-lite==2.1.0
  # Their configs only (the paper configs' bases): their models need
  # mmcv's compiled ops, and those tests skip here.
  ok 'import mmdet, mmseg, mmpretrain' || pip_install --no-deps \
    mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0
  pip_install --no-deps --no-build-isolation -e .
  log "newest: torch $("$PY" -c 'import torch; print(torch.__version__)'): the op and backbone tests, and checkpoint loading (torch's weights-only unpickler) on every route this stack has"
  "$PY" -m pytest -q -m "not slow" -p no:cacheprovider $XDIST tests/test_ops \
    tests/test_models tests/test_runtime/test_safe_loading.py \
    tests/test_runtime/test_crafted_checkpoints.py \
    -k 'not deployment and not test_tool'
  log "newest: passed"
}

for env in "${@:-openmmlab newest}"; do
  for one in $env; do
    case "$one" in
      openmmlab) openmmlab ;;
      newest) newest ;;
      *) echo "matrix: no environment '$one' (openmmlab, newest)" >&2; exit 2 ;;
    esac
  done
done
exit 0
}

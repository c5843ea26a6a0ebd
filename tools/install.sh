#!/usr/bin/env bash
# Idempotent installer for pelk_mm and the OpenMMLab stack it is tested with.
#
# Creates .venv in the repository root and installs, in order, only what is
# missing or broken:
#   torch 2.12.1 + torchvision 0.27.1   (a pair whose C++ ops load together;
#                                        torch >= 2.14 headers need C++20,
#                                        which mmcv 2.1.0's build does not use)
#   setuptools<82, wheel, ninja          (mmcv's setup.py and mmengine's
#                                        `mmseg::` base configs import
#                                        pkg_resources)
#   mmengine 0.10.7
#   mmcv 2.1.0 with compiled ops         (built from source; pip caches the
#                                        wheel, so later runs reuse it)
#   mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0, ftfy, regex,
#   opencv-python<5, pytest, flake8 7.1.1, isort 5.13.2, yapf 0.40.2
#   (the house style's checkers, `make lint`), and pelk_mm itself
#   (editable).
#
# Usage: bash tools/install.sh   (or `make install`)
# Environment: PYTHON (default python3.11), VENV (default .venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
START=$(date +%s)

log() { printf '[install %4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
ok() { "$PY" - >/dev/null 2>&1 <<<"$1"; }
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "install: $PYTHON not found. pelk_mm is tested with Python 3.11;" \
       "set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

if ! ok 'import setuptools, wheel, ninja, sys; from packaging.version import Version as V; sys.exit(V(setuptools.__version__) >= V("82"))'; then
  log "installing build tools (setuptools<82, wheel, ninja)"
  pip_install -q 'setuptools<82' wheel ninja packaging
fi

if ! ok 'import torch, torchvision, torchvision.ops, sys; sys.exit(not (torch.__version__.startswith("2.12.1") and torchvision.__version__.startswith("0.27.1")))'; then
  log "installing torch 2.12.1 + torchvision 0.27.1 (about 2.6 GB)"
  pip_install -q torch==2.12.1 torchvision==0.27.1
fi

if ! ok 'import mmengine, sys; sys.exit(mmengine.__version__ != "0.10.7")'; then
  log "installing mmengine 0.10.7"
  pip_install -q mmengine==0.10.7 'opencv-python<5'
fi

if ! ok 'import mmcv, mmcv.ops, sys; from mmcv.ops import nms, roi_align; sys.exit(mmcv.__version__ != "2.1.0")'; then
  log "building mmcv 2.1.0 with compiled ops (8-19 minutes on 2 cores; cached afterwards)"
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    pip_install --no-build-isolation mmcv==2.1.0
  if ! ok 'import mmcv.ops; from mmcv.ops import nms, roi_align'; then
    echo "install: mmcv 2.1.0 was installed without its compiled ops" \
         "(mmcv.ops does not import). Remove it with" \
         "'$PY -m pip uninstall -y mmcv', clear the cached wheel" \
         "('$PY -m pip cache remove mmcv') and run this script again." >&2
    exit 1
  fi
fi

if ! ok 'import mmdet, mmseg, mmpretrain, ftfy, regex, cv2, pytest, sys; sys.exit(not (mmdet.__version__ == "3.3.0" and mmseg.__version__ == "1.2.2" and mmpretrain.__version__ == "1.2.0"))'; then
  log "installing mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0"
  pip_install -q mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0 \
    ftfy regex 'opencv-python<5' pytest
fi

if ! ok 'import sys, flake8, isort, yapf; sys.exit(not (flake8.__version__, isort.__version__, yapf.__version__) == ("7.1.1", "5.13.2", "0.40.2"))'; then
  log "installing flake8 7.1.1, isort 5.13.2, yapf 0.40.2 (make lint)"
  pip_install -q flake8==7.1.1 isort==5.13.2 yapf==0.40.2
fi

if ! ok 'import pelk_mm' || [ setup.cfg -nt "$VENV/.pelk_mm-installed" ]; then
  log "installing pelk_mm (editable)"
  pip_install -q --no-build-isolation --no-deps -e .
  touch "$VENV/.pelk_mm-installed"
fi

# The fused summed-area-table path of the peripheral conv: compiled once here
# (about a minute) so that the first training run does not wait for it.
log "building pelk_mm's peripheral-conv extension (C++/OpenMP; cached)"
if ! "$PY" -c 'from pelk_mm.ops import sat; sat.load()'; then
  echo "install: the C++ extension of pelk_mm did not build (see above); it" \
       "needs g++ with OpenMP and ninja. pelk_mm still works through its FFT" \
       "and dense paths, but the tests of the 'sat' path will fail." >&2
  exit 1
fi

log "done: $("$PY" -c 'import torch, mmcv, mmengine, mmdet, mmseg, mmpretrain; print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}")')"

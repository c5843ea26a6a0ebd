#!/usr/bin/env bash
# Fetch the wheels tools/gpu/check.sh needs on a GPU machine that has
# Python 3.12 with torch and triton but no OpenMMLab packages and no
# registry: mmengine, mmcv-lite (mmcv without compiled ops: enough for the
# backbone, the benchmarks and the classification demo; mmseg and mmdet
# need mmcv's compiled ops, so their parts are skipped there), mmpretrain,
# and what those import that such a machine lacks. Run it where pip reaches
# PyPI; the wheels go to .gpu_wheels/ (ignored by git), which the GPU run
# carries.
#
# Usage: bash tools/gpu/prepare.sh [PYTHON_VERSION (default 3.12)]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
version="${1:-3.12}"
PIP="${PIP:-python3 -m pip}"
mkdir -p .gpu_wheels
# Pinned as the CPU install pins them (tools/install.sh); the rest are the
# pure-Python packages these import.
wheels=(
  mmengine==0.10.7 mmcv-lite==2.1.0 mmpretrain==1.2.0
  addict termcolor yapf==0.40.2 platformdirs mat4py modelindex model-index ordered-set
  importlib-metadata lazy-importer
)
$PIP download --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu_wheels "${wheels[@]}"
echo "prepare: $(ls .gpu_wheels | wc -l) wheels in .gpu_wheels/" \
     "($(du -sh .gpu_wheels | cut -f1)); carry .gpu_wheels with the GPU run:" \
     "bash tools/gpu/check.sh"

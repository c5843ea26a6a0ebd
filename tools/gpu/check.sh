#!/usr/bin/env bash
# Measure pelk_mm on a GPU in one command that stops itself within 9
# minutes (tools/gpu/check.py says what it measures), writing
# gpu_check.json and gpu_check.txt under $OUT (default work_dirs/gpu_check).
#
# Made for a GPU machine with torch and triton but without the OpenMMLab
# packages and without a registry: the wheels tools/gpu/prepare.sh fetched
# into .gpu_wheels/ are installed into a folder of /tmp first (where
# mmengine, mmcv and mmpretrain are not importable already).
#
# Usage: bash tools/gpu/check.sh [--dry-run] [check.py's other options]
#        (--dry-run: the same parts on CPU tensors at tiny sizes, under a
#        minute; the quick tests run it)
# Environment: PYTHON (default: .venv/bin/python where there is one, else
#              python3), OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c 'import mmengine, mmcv, mmpretrain' >/dev/null 2>&1; then
  if ls .gpu_wheels/*.whl >/dev/null 2>&1; then
    site=/tmp/pelk_mm_gpu_site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$site" .gpu_wheels/*.whl
    export PYTHONPATH="$ROOT:$site${PYTHONPATH#"$ROOT"}"
  else
    echo "check: mmengine/mmcv/mmpretrain are not importable and there is" \
         "no .gpu_wheels/: the parts that need them are skipped (run" \
         "bash tools/gpu/prepare.sh where pip works, and carry .gpu_wheels)" >&2
  fi
fi
export PYTHONUNBUFFERED=1
# check.py keeps its own budget; this is the backstop (9 minutes).
exec timeout -k 10 540 "$PYTHON" tools/gpu/check.py --out "${OUT:-work_dirs/gpu_check}" "$@"

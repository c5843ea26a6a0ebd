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
#                                        wheel, so later runs reuse it; with
#                                        CUDA kernels where nvcc is found,
#                                        see below)
#   mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0, ftfy, regex,
#   opencv-python<5, pytest<9.2 and pytest-xdist (`make test`), flake8
#   7.1.1, isort 5.13.2, yapf 0.40.2 (the house style's checkers, `make
#   lint`), and pelk_mm itself
#   (editable).
#
# mmcv's CUDA ops, by mmcv's own rule: its setup.py compiles them where
# torch sees a GPU, or where asked (FORCE_CUDA=1). So does this script: CUDA
# ops where `torch.cuda.is_available()` (for the GPUs torch sees), or where
# asked: TORCH_CUDA_ARCH_LIST set (a login node building for its compute
# nodes: those architectures) or PELK_MM_MMCV_CUDA=1 (7.5-9.0 +PTX unless
# TORCH_CUDA_ARCH_LIST says). Otherwise CPU ops, with a line saying how to
# get CUDA ops; PELK_MM_MMCV_CUDA=0 builds CPU ops whatever is there. A CUDA
# build needs nvcc (on PATH or in $CUDA_HOME/bin) of torch's CUDA; where the
# toolkit lacks the library headers torch's headers include (cusparse.h,
# cublas_v2.h, ...: a compiler-only toolkit), the ones torch's nvidia-* wheels
# put in the venv are added to the build's include and library paths. A
# cached CPU-only wheel is not reused for a CUDA build, and an mmcv without
# CUDA ops is rebuilt when a CUDA build is planned.
# `bash tools/install.sh --mmcv-build-plan` prints the decision and changes
# nothing.
#
# Usage: bash tools/install.sh [--mmcv-build-plan | --lint-tools |
#                               --test-runner]
#        (or `make install`; `--lint-tools` installs the style checkers
#        alone, for `make lint`; `--test-runner` pytest and pytest-xdist
#        alone, into VENV: tools/test_matrix.sh's venvs)
# Environment: PYTHON (default python3.11), VENV (default .venv),
#              PELK_MM_MMCV_CUDA (auto, 0 or 1; default auto),
#              TORCH_CUDA_ARCH_LIST, CUDA_HOME, MAX_JOBS.
set -euo pipefail
# The whole script is one block, read before any of it runs: bash reads a
# script as it goes, so a `git pull` during the mmcv build would otherwise
# make it run the changed file from the old offset.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
START=$(date +%s)

log() { printf '[install %4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
ok() { "$PY" - >/dev/null 2>&1 <<<"$1"; }
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

# torch's CUDA version; before torch is installed, that of the pinned one.
torch_cuda() { "$PY" -c 'import torch; print(torch.version.cuda)' 2>/dev/null || echo '13.0'; }

# The compute capabilities of the GPUs torch sees ("8.0;9.0"), empty where
# it sees none; without a torch in the venv yet, those nvidia-smi lists.
torch_gpu_archs() {
  if "$PY" -c 'import torch' >/dev/null 2>&1; then
    "$PY" -c 'import torch
if torch.cuda.is_available():
    print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                           for i in range(torch.cuda.device_count())})))' \
      2>/dev/null || true
  else
    nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
      | sort -u | paste -sd ';' - || true
  fi
}

# The GPUs nvidia-smi lists, for the case where torch sees none of them.
smi_gpus() {
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null \
    | sort -u | paste -sd ',' - || true
}

# The include and library folders of the CUDA libraries torch's nvidia-*
# wheels installed in the venv (nvidia/cu13/include, nvidia/cublas/include,
# ...), ':'-joined.
venv_cuda_dirs() {
  local kind="$1" dir dirs=()
  for dir in "$VENV"/lib/python*/site-packages/nvidia/*/"$kind"; do
    [ -d "$dir" ] && dirs+=("$dir")
  done
  local IFS=:
  echo "${dirs[*]-}"
}

# The root of the CUDA toolkit whose nvcc is $1, as nvcc itself reports it
# (its TOP), else the folder above its bin/.
toolkit_root() {
  local line top=""
  while IFS= read -r line; do
    case "$line" in
      '#$ TOP='*) top="${line#'#$ TOP='}" ;;
    esac
  done < <("$1" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 || true)
  if [ -z "$top" ]; then
    top="$(dirname "$1")/.."
  fi
  (cd "$top" 2>/dev/null && pwd -P) || true
}

# What mmcv is built with here: sets PLAN (an array of VAR=value for `env`:
# FORCE_CUDA=0, or FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=..., CUDA_HOME (the
# toolkit of the nvcc found, unless set) and, with torch's CUDA headers,
# CPATH and LIBRARY_PATH), WHY (the reason, for people) and
# CUDA_BUILD (1 or 0).
mmcv_build_plan() {
  local nvcc archs smi includes libs
  local want="${PELK_MM_MMCV_CUDA:-auto}"
  CUDA_BUILD=0
  PLAN=(FORCE_CUDA=0)
  case "$want" in
    0)
      WHY="mmcv: CPU ops only (PELK_MM_MMCV_CUDA=0)"
      return ;;
    1|auto) ;;
    *)
      echo "install: PELK_MM_MMCV_CUDA must be auto, 0 or 1, got" \
           "'$PELK_MM_MMCV_CUDA'" >&2
      exit 1 ;;
  esac
  if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    archs="$TORCH_CUDA_ARCH_LIST"
    WHY="mmcv: CUDA ops for TORCH_CUDA_ARCH_LIST=$archs (given)"
  elif archs="$(torch_gpu_archs)" && [ -n "$archs" ]; then
    WHY="mmcv: CUDA ops for the GPUs torch sees ($archs)"
  elif [ "$want" = 1 ]; then
    archs="7.5;8.0;8.6;8.9;9.0+PTX"
    WHY="mmcv: CUDA ops (PELK_MM_MMCV_CUDA=1); no GPU visible, so for $archs (set TORCH_CUDA_ARCH_LIST to choose)"
  else
    local cuda how
    cuda="$(torch_cuda)"
    how="for CUDA ops (detectors on GPUs) install on a GPU node, or set TORCH_CUDA_ARCH_LIST (e.g. '8.0;9.0') or PELK_MM_MMCV_CUDA=1, with nvcc of CUDA $cuda"
    smi="$(smi_gpus)"
    if [ -n "$smi" ]; then
      WHY="mmcv: CPU ops only: nvidia-smi lists GPUs ($smi) but torch (CUDA $cuda) sees none, so the driver is likely older than CUDA $cuda needs (see README); $how"
    else
      WHY="mmcv: CPU ops only (torch sees no GPU); $how"
    fi
    return
  fi
  nvcc="$(command -v nvcc 2>/dev/null || true)"
  if [ -z "$nvcc" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    nvcc="$CUDA_HOME/bin/nvcc"
  fi
  if [ -z "$nvcc" ] && [ "$want" = auto ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    WHY="mmcv: CPU ops only: torch sees GPUs ($archs) but there is no nvcc on PATH or in \$CUDA_HOME/bin; for CUDA ops (detectors on GPUs) install the CUDA toolkit of torch's CUDA ($(torch_cuda)) and run this again"
    return
  fi
  if [ -z "$nvcc" ]; then
    echo "install: ${WHY#mmcv: }, but no nvcc on PATH or in \$CUDA_HOME/bin:" \
         "install the CUDA toolkit of torch's CUDA ($(torch_cuda)) and set" \
         "CUDA_HOME, or set PELK_MM_MMCV_CUDA=0 for CPU ops only" >&2
    exit 1
  fi
  WHY="$WHY, with $nvcc"
  CUDA_BUILD=1
  PLAN=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$archs")
  if [ -z "${CUDA_HOME:-}" ]; then
    # torch takes the folder above nvcc's for the toolkit, which is wrong
    # where nvcc on PATH is a link or a wrapper script (/usr/local/bin/nvcc
    # -> /usr/local/cuda-13.0/bin/nvcc): the C++ sources then find no
    # cuda_runtime_api.h of the toolkit's.
    local home
    home="$(toolkit_root "$nvcc")"
    if [ -n "$home" ]; then
      PLAN+=("CUDA_HOME=$home")
    fi
  fi
  includes="$(venv_cuda_dirs include)"
  libs="$(venv_cuda_dirs lib)"
  if [ -n "$includes" ]; then
    PLAN+=("CPATH=$includes${CPATH:+:$CPATH}")
    WHY="$WHY and the CUDA library headers of torch's nvidia wheels"
  fi
  if [ -n "$libs" ]; then
    PLAN+=("LIBRARY_PATH=$libs${LIBRARY_PATH:+:$LIBRARY_PATH}")
  fi
}

if [ "${1:-}" = "--mmcv-build-plan" ]; then
  mmcv_build_plan
  echo "$WHY" >&2
  echo "${PLAN[*]}"
  exit 0
fi

# The house style's checkers (`make lint`, `make format`): seconds, with
# nothing else of the stack (mypy treats torch and OpenMMLab as untyped,
# whether they are installed or not: setup.cfg).
install_lint_tools() {
  if ! ok 'import sys, flake8, isort, yapf, mypy.version; sys.exit(not (flake8.__version__, isort.__version__, yapf.__version__, mypy.version.__version__) == ("7.1.1", "5.13.2", "0.40.2", "2.4.1"))'; then
    log "installing flake8 7.1.1, isort 5.13.2, yapf 0.40.2, mypy 2.4.1 (make lint)"
    pip_install -q flake8==7.1.1 isort==5.13.2 yapf==0.40.2 mypy==2.4.1
  fi
}

# The suite's runner (`make test`, and the matrix's venvs: pytest-xdist, a
# worker per core). pytest < 9.2: on 9.2, xdist 3.8's --dist loadgroup
# groups nothing (it marks a test's group in its node id, which pytest 9.2
# no longer lets it change; pytest-dev/pytest-xdist#1386), and each worker
# would train the shared models again (tests/conftest.py refuses that).
install_test_runner() {
  if ! ok 'import pytest, xdist, sys; from packaging.version import Version as V; sys.exit(V(pytest.__version__) >= V("9.2"))'; then
    log "installing pytest<9.2, pytest-xdist (make test)"
    pip_install -q 'pytest<9.2' pytest-xdist
  fi
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "install: $PYTHON not found. pelk_mm is tested with Python 3.11;" \
       "set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

if [ "${1:-}" = "--lint-tools" ]; then
  install_lint_tools
  exit 0
fi
if [ "${1:-}" = "--test-runner" ]; then
  install_test_runner
  exit 0
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

mmcv_build_plan
# The CUDA version of mmcv's ops as the build plan needs it ("not available"
# is mmcv's answer for CPU-only ops).
if [ "$CUDA_BUILD" = 1 ]; then
  MMCV_CUDA_OK='from mmcv.ops import get_compiling_cuda_version as v; sys.exit(v() == "not available")'
else
  MMCV_CUDA_OK='pass'
fi
if ! ok "import mmcv, mmcv.ops, sys; from mmcv.ops import nms, roi_align; assert mmcv.__version__ == '2.1.0'; $MMCV_CUDA_OK"; then
  echo "$WHY"
  CACHE=()
  if [ "$CUDA_BUILD" = 1 ]; then
    log "building mmcv 2.1.0 with compiled CPU and CUDA ops (20-60 minutes)"
    # pip's wheel cache does not know how a wheel was built: never take a
    # CPU-only one from it for this build. An mmcv already there is replaced
    # once the new one is built (a failed build leaves it in place).
    CACHE=(--no-cache-dir --force-reinstall --no-deps)
  else
    log "building mmcv 2.1.0 with compiled CPU ops (8-19 minutes on 2 cores; seconds where pip cached the wheel of an earlier build)"
  fi
  if ! env MMCV_WITH_OPS=1 "${PLAN[@]}" MAX_JOBS="${MAX_JOBS:-2}" \
    "$PY" -m pip install --disable-pip-version-check ${CACHE[@]+"${CACHE[@]}"} \
    --no-build-isolation mmcv==2.1.0; then
    if [ "$CUDA_BUILD" = 1 ]; then
      echo "install: building mmcv 2.1.0 with CUDA ops failed (see above)." \
           "Common causes: a CUDA toolkit without the library headers torch" \
           "includes (cusparse.h, cublas_v2.h, ...), or an nvcc whose CUDA is" \
           "not torch's ($(torch_cuda))." \
           "Fix the toolkit (CUDA_HOME), or set PELK_MM_MMCV_CUDA=0 for CPU" \
           "ops only; an mmcv already installed was left in place." >&2
    fi
    exit 1
  fi
  if ! ok 'import mmcv.ops; from mmcv.ops import nms, roi_align'; then
    echo "install: mmcv 2.1.0 was installed without its compiled ops" \
         "(mmcv.ops does not import). Remove it with" \
         "'$PY -m pip uninstall -y mmcv', clear the cached wheel" \
         "('$PY -m pip cache remove mmcv') and run this script again." >&2
    exit 1
  fi
  if ! ok "import sys; $MMCV_CUDA_OK"; then
    echo "install: mmcv 2.1.0 was built without CUDA ops though they were" \
         "asked for (FORCE_CUDA=1);" \
         "check that nvcc's CUDA matches torch's ($(torch_cuda))" \
         "and see the build log above." >&2
    exit 1
  fi
fi
MMCV_OPS="$("$PY" -c 'from mmcv.ops import get_compiling_cuda_version as v; c = v(); print("CPU ops only" if c == "not available" else f"CPU + CUDA {c} ops")')"

if ! ok 'import mmdet, mmseg, mmpretrain, ftfy, regex, cv2, sys; sys.exit(not (mmdet.__version__ == "3.3.0" and mmseg.__version__ == "1.2.2" and mmpretrain.__version__ == "1.2.0"))'; then
  log "installing mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0"
  pip_install -q mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0 \
    ftfy regex 'opencv-python<5'
fi

install_test_runner

# ONNX export (tools/deployment/pytorch2onnx.py): torch's dynamo-based
# exporter needs onnxscript; onnxruntime checks and times the graphs.
if ! ok 'import sys, onnx, onnxruntime, onnxscript; sys.exit(not (onnx.__version__, onnxruntime.__version__, onnxscript.__version__) == ("1.23.2", "1.32.0", "0.7.2"))'; then
  log "installing onnx 1.23.2, onnxruntime 1.32.0, onnxscript 0.7.2 (ONNX export)"
  pip_install -q onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2
fi

install_lint_tools

if ! ok 'import pelk_mm' || [ ! -e pelk_mm/.mim/model-index.yml ] \
    || [ setup.cfg -nt "$VENV/.pelk_mm-installed" ] \
    || [ setup.py -nt "$VENV/.pelk_mm-installed" ]; then
  log "installing pelk_mm (editable)"
  pip_install -q --no-build-isolation --no-deps -e .
  touch "$VENV/.pelk_mm-installed"
fi

# The fused summed-area-table path of the peripheral conv: compiled once here
# (about a minute) so that the first training run does not wait for it.
log "building pelk_mm's peripheral-conv extension (C++/OpenMP; cached)"
if ! "$PY" -c 'from pelk_mm.ops.csrc import build; build.load()'; then
  echo "install: the C++ extension of pelk_mm did not build (see above); it" \
       "needs g++ with OpenMP and ninja. pelk_mm still works through its FFT" \
       "and dense paths, but the tests of the 'sat' path will fail." >&2
  exit 1
fi

log "done: $("$PY" -c 'import torch, mmcv, mmengine, mmdet, mmseg, mmpretrain; print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}")') (mmcv: $MMCV_OPS)"
exit 0
}

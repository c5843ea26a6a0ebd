#!/usr/bin/env bash
# Testing on a Slurm cluster, one task per GPU:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [ARGS...]
# ARGS go to tools/test.py (e.g. --work-dir, --show-dir, --cfg-options ...).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: [GPUS=N] bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG" \
       "CHECKPOINT [ARGS...]" >&2
  exit 2
fi
PARTITION=$1 JOB_NAME=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/slurm_run.sh" "$PARTITION" \
  "$JOB_NAME" test.py "$@"

#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU:
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [ARGS...]
# ARGS go to tools/train.py (e.g. --resume, --amp, --cfg-options ...).
# mmengine's slurm launcher takes each task's rank from Slurm and the master
# from the node list; PORT (default 29500) is the rendezvous port.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: [GPUS=N] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG" \
       "[WORK_DIR] [ARGS...]" >&2
  exit 2
fi
PARTITION=$1 JOB_NAME=$2 CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  WORK_DIR_ARGS=(--work-dir "$1")
  shift
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/slurm_run.sh" "$PARTITION" \
  "$JOB_NAME" train.py "$CONFIG" ${WORK_DIR_ARGS[@]+"${WORK_DIR_ARGS[@]}"} "$@"

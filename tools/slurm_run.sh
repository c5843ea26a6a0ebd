#!/usr/bin/env bash
# srun behind slurm_train.sh and slurm_test.sh:
#   slurm_run.sh PARTITION JOB_NAME SCRIPT [ARGS...]  (SCRIPT relative to tools/)
# GPUS tasks in all (default 8), GPUS_PER_NODE per node (default min(GPUS,
# 8)), CPUS_PER_TASK cores each (default 5), SRUN_ARGS added to srun's.
set -euo pipefail
PARTITION=$1 JOB_NAME=$2 SCRIPT=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
read -r -a EXTRA <<< "${SRUN_ARGS:-}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec srun \
  --partition="$PARTITION" \
  --job-name="$JOB_NAME" \
  --gres="gpu:$GPUS_PER_NODE" \
  --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 \
  ${EXTRA[@]+"${EXTRA[@]}"} \
  "$PYTHON" -u "$ROOT/tools/$SCRIPT" "$@" --launcher slurm

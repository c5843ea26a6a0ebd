#!/usr/bin/env bash
# torchrun launcher behind dist_train.sh and dist_test.sh:
#   dist_run.sh SCRIPT NUM_PROCS [ARGS...]   (SCRIPT is relative to tools/)
# Works with GPUs (NCCL, one process per GPU) and without (gloo on the CPU,
# see tools/launch.py). NNODES, NODE_RANK, MASTER_ADDR, PORT as usual.
set -euo pipefail
SCRIPT=$1
NPROCS=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROCS" \
    "$ROOT/tools/$SCRIPT" "$@" --launcher pytorch

#!/usr/bin/env bash
# Distributed training: dist_train.sh CONFIG NUM_PROCS [ARGS...]
set -euo pipefail
CONFIG=$1 NPROCS=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_run.sh" train.py "$NPROCS" "$CONFIG" "$@"

#!/usr/bin/env bash
# Distributed testing: dist_test.sh CONFIG CHECKPOINT NUM_PROCS [ARGS...]
set -euo pipefail
CONFIG=$1 CHECKPOINT=$2 NPROCS=$3
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_run.sh" test.py "$NPROCS" "$CONFIG" "$CHECKPOINT" "$@"

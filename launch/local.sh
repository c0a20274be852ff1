#!/usr/bin/env bash
# One process on this machine, using all its devices (a laptop's CPU, or every GPU of one host).
#
#   launch/local.sh --config configs/pretrain.py:demo --workdir runs/demo
#
# Settings (environment variables):
PYTHON=${PYTHON:-python}            # the interpreter that has stjax installed
set -euo pipefail
export STJAX_DISTRIBUTED=0          # alone, even inside a SLURM allocation
exec "$PYTHON" -m stjax.main "$@"

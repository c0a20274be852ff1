#!/usr/bin/env bash
# N processes on this machine, joined by jax.distributed: one per GPU, or CPU processes that exercise the
# multi-host code paths (each reads its own slice of the data; process 0 writes the logs and reports).
#
#   launch/multiprocess.sh 2 --config configs/pretrain.py:demo --workdir runs/demo2
#
# A SIGTERM to this script is passed on to every process: they stop together after a checkpoint and exit 0.
# Settings (environment variables):
PYTHON=${PYTHON:-python}            # the interpreter that has stjax installed
PORT=${PORT:-$((20000 + RANDOM % 20000))}  # the coordinator's port on 127.0.0.1
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-}  # GPUs per process (process i gets GPUs i*k .. i*k+k-1);
                                            # empty: every process sees all local devices (CPU: set
                                            # XLA_FLAGS=--xla_force_host_platform_device_count=K for K each)
set -euo pipefail
NUM_PROCESSES=${1:?usage: launch/multiprocess.sh NUM_PROCESSES --config ... --workdir ...}
shift
[[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]] || { echo "NUM_PROCESSES must be a positive integer, got $NUM_PROCESSES" >&2; exit 2; }

pids=()
forward() { kill -s "$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
for ((i = 0; i < NUM_PROCESSES; i++)); do
  ids=""
  if [[ -n "$DEVICES_PER_PROCESS" ]]; then
    ids=$(seq -s, $((i * DEVICES_PER_PROCESS)) $(((i + 1) * DEVICES_PER_PROCESS - 1)))
  fi
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$NUM_PROCESSES" JAX_PROCESS_ID="$i" \
    JAX_LOCAL_DEVICE_IDS="$ids" STJAX_DISTRIBUTED=1 "$PYTHON" -m stjax.main "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  # `wait` returns early (status > 128) when a trapped signal arrives; wait again for the real exit.
  while true; do
    set +e; wait "$pid"; code=$?; set -e
    if kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  if [[ $code -ne 0 && $status -eq 0 ]]; then
    status=$code
    forward TERM  # one process failed: the others cannot go on without it
  fi
done
exit $status

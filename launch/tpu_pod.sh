#!/usr/bin/env bash
# Every worker of a Cloud TPU VM (a pod slice: v4-32, v5e-64, ...) runs the same command; JAX finds the
# other workers itself (jax.distributed with TPU auto-detection).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config configs/pretrain.py:k400_r50 --workdir /mnt/shared/runs/rho_byol
#
# The checkout and the data must exist on every worker (same path), and --workdir must be one shared
# folder (an NFS / Filestore or gcsfuse mount) that all workers see: Orbax writes one checkpoint
# together from every worker. A preempted (spot/queued) slice gets SIGTERM: the run saves and exits 0;
# this command again continues it.
# Settings (environment variables):
TPU_NAME=${TPU_NAME:?set TPU_NAME to the TPU VM name}
ZONE=${ZONE:?set ZONE, e.g. us-central2-b}
PROJECT=${PROJECT:-}                      # default: gcloud's configured project
REPO_DIR=${REPO_DIR:-\~/stjax}            # the checkout on every worker
PYTHON=${PYTHON:-python3}
set -euo pipefail
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} --worker=all \
  --command "cd $REPO_DIR && STJAX_DISTRIBUTED=1 $PYTHON -m stjax.main $args"

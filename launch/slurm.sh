#!/usr/bin/env bash
# A SLURM batch job: one process per GPU on every node (srun), joined by jax.distributed, which reads the
# layout from SLURM's variables.
#
#   sbatch launch/slurm.sh --config configs/pretrain.py:k400_r50 --workdir /shared/runs/rho_byol
#   sbatch --nodes=4 launch/slurm.sh ...          # the #SBATCH lines below are defaults; flags override
#
# --workdir must be on a filesystem every node sees. SLURM sends SIGTERM 120 s before the time limit
# (--signal): the run saves a checkpoint and exits 0, and this script requeues the job, which resumes.
#SBATCH --job-name=stjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# Settings (environment variables):
PYTHON=${PYTHON:-python}
REQUEUE=${REQUEUE:-1}               # 1: requeue a run that stopped before finishing (no summary.json yet)
set -euo pipefail

workdir=""
previous=""
for arg in "$@"; do
  case "$arg" in
    --workdir=*) workdir=${arg#--workdir=} ;;
    *) [[ "$previous" == "--workdir" ]] && workdir=$arg ;;
  esac
  previous=$arg
done
[[ -n "$workdir" ]] || { echo "pass --workdir" >&2; exit 2; }

srun --kill-on-bad-exit=1 "$PYTHON" -m stjax.main "$@"
if [[ "$REQUEUE" == 1 && ! -f "$workdir/summary.json" && -n "${SLURM_JOB_ID:-}" ]]; then
  echo "not finished (preempted or out of time): requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi

#!/usr/bin/env bash
# One Cloud TPU VM pod slice: create it, copy this checkout to every worker, install, and run
# `sora-jax train` on all workers at once (jax.distributed auto-detects the pod).
#
#   PROJECT=my-proj ZONE=us-east5-a ACCELERATOR=v5p-256 CONFIG=configs/sora_8b.py:v5p \
#     WORKDIR=/gcs/bucket/runs/8b launch/tpu_vm_pod.sh [--config.train.steps=1000 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
tpu() { gcloud compute tpus tpu-vm "$@" --project="$PROJECT" --zone="$ZONE"; }

if ! tpu describe "$TPU_NAME" >/dev/null 2>&1; then
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi
# Check the compiled step fits the slice before spending pod time (runs here, on CPU).
sora-jax aot --config="$CONFIG" --topology="$ACCELERATOR" "${EXTRA_ARGS[@]}" >/dev/null

git archive --format=tar.gz -o /tmp/sora_jax.tar.gz HEAD
tpu scp /tmp/sora_jax.tar.gz "$TPU_NAME":/tmp/ --worker=all
tpu ssh "$TPU_NAME" --worker=all --command="
  set -e; mkdir -p $REPO_DIR && tar -xzf /tmp/sora_jax.tar.gz -C $REPO_DIR && cd $REPO_DIR
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'"
# Every worker runs the same command; each feeds only its own rows of the global batch.
tpu ssh "$TPU_NAME" --worker=all --command="
  cd $REPO_DIR && . .venv/bin/activate &&
  sora-jax train --distributed --config=$CONFIG --workdir=$WORKDIR ${EXTRA_ARGS[*]} 2>&1 | tee -a train.log"

#!/usr/bin/env bash
# Multislice: NUM_SLICES TPU slices joined over the data-center network (DCN), requested as one
# queued resource. The config's mesh must put DCN traffic on `data`:
#   --config.mesh.dcn.data=$NUM_SLICES   (ICI axes size one slice; data-parallel across slices)
#
#   PROJECT=my-proj NUM_SLICES=4 ACCELERATOR=v5p-256 CONFIG=configs/sora_8b.py:v5p \
#     WORKDIR=/gcs/bucket/runs/8b-ms launch/multislice.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NUM_SLICES:=2}"
source launch/common.sh
QR="${TPU_NAME}-qr"
EXTRA_ARGS+=("--config.mesh.dcn.data=$NUM_SLICES")

sora-jax aot --config="$CONFIG" --topology="$ACCELERATOR" --num_slices="$NUM_SLICES" "${EXTRA_ARGS[@]}" >/dev/null
gcloud compute tpus queued-resources create "$QR" --project="$PROJECT" --zone="$ZONE" \
  --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME" \
  --node-count="$NUM_SLICES" --node-prefix="$TPU_NAME"
echo "waiting for $QR to become ACTIVE"
until gcloud compute tpus queued-resources describe "$QR" --project="$PROJECT" --zone="$ZONE" \
      --format='value(state.state)' | grep -q ACTIVE; do sleep 30; done

git archive --format=tar.gz -o /tmp/sora_jax.tar.gz HEAD
for i in $(seq 0 $((NUM_SLICES - 1))); do
  node="${TPU_NAME}-${i}"
  gcloud compute tpus tpu-vm scp /tmp/sora_jax.tar.gz "$node":/tmp/ --worker=all --project="$PROJECT" --zone="$ZONE"
  # The runtime sets the MEGASCALE_* variables that join slices; jax.distributed reads them.
  gcloud compute tpus tpu-vm ssh "$node" --worker=all --project="$PROJECT" --zone="$ZONE" --command="
    set -e; mkdir -p $REPO_DIR && tar -xzf /tmp/sora_jax.tar.gz -C $REPO_DIR && cd $REPO_DIR
    python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'
    nohup sora-jax train --distributed --config=$CONFIG --workdir=$WORKDIR ${EXTRA_ARGS[*]} > train.log 2>&1 &" &
done
wait

# Shared settings for the launch scripts; override any of them in the environment.
: "${PROJECT:?set PROJECT to your Google Cloud project}"
: "${ZONE:=us-east5-a}"
: "${TPU_NAME:=sora-jax}"
: "${ACCELERATOR:=v5p-256}"           # Cloud TPU slice type; must match the config's mesh
: "${RUNTIME:=v2-alpha-tpuv5}"        # TPU VM software version for the accelerator
: "${CONFIG:=configs/shapes.py}"      # any config file[:variant]
: "${WORKDIR:=/gcs/YOUR_BUCKET/runs/sora}"  # a filesystem all hosts share (e.g. a gcsfuse mount)
: "${REPO_DIR:=sora_jax}"             # where the code lives on each worker
EXTRA_ARGS=("$@")

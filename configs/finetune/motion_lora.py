"""MotionLoRA (AnimateDiff): LoRA on the temporal attention alone teaches a camera motion.

  sora-jax train --config=configs/shapes.py:factorized --workdir=runs/factorized
  sora-jax finetune --base=runs/factorized --config=configs/finetune/motion_lora.py --workdir=runs/zoom
  sora-jax sample --workdir=runs/factorized --adapter=runs/zoom --prompt="a red circle moves up" --output=zoom.mp4

The clips are the shapes videos filmed by a camera zooming in (the whole frame scaled 1.5x over
17 frames); their captions are the base's, naming no camera. The base must have temporal
attention blocks (configs/shapes.py:factorized); on a full-attention base the targets match no
layer and finetune says so. Keys here are laid over the base run's config
(`--config.KEY=VALUE` overrides any adapter key and the other keys named here).
"""

from sora_jax.config import finetune_config


def get_config():
  return finetune_config(
      adapter=dict(
          kind="lora",
          rank=8,
          alpha=8.0,
          targets=(r"self_attn/(query|key|value|out)$",),
          block_patterns=("temporal",),
      ),
      data=dict(camera="zoom_in", num_examples=600),
      train=dict(steps=2000, lr=2e-3, warmup=50, checkpoint_every=500),
      sample=dict(adapter_eval_seeds=3),  # held-out prompts x seeds, sampled with and without it
  )

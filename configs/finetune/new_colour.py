"""A LoRA that teaches a word the base never saw: the colour "violet" (synthetic.NEW_COLOURS),
from shapes videos drawn in violet only, their held-out (shape, direction) pairs kept out.

  sora-jax finetune --base=runs/base --config=configs/finetune/new_colour.py --workdir=runs/violet
  sora-jax sample --workdir=runs/base --adapter=runs/violet --prompt="a violet square moves up" --output=v.mp4

The word's row of the caption encoder's embedding table is as the base left it (never trained);
LoRA on the caption encoder's layers, the pooled-caption MLP, the caption projection and the
cross-attention's keys and values learns to read it. Keys here are laid over the base run's config
(`--config.KEY=VALUE` overrides any adapter key and the other keys named here).
"""

from sora_jax.config import finetune_config


def get_config():
  return finetune_config(
      adapter=dict(
          kind="lora",
          rank=8,
          alpha=8.0,
          targets=(r"^text_encoder/", r"^text_pool_mlp/", r"^text_proj$", r"cross_attn/(key|value)$"),
          block_patterns=(),
      ),
      data=dict(colours=("violet",), num_examples=600),
      train=dict(steps=1000, lr=2e-3, warmup=50, checkpoint_every=500),
      sample=dict(adapter_eval_seeds=3),  # held-out prompts x seeds, sampled with and without it
  )

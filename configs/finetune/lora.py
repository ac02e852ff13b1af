"""LoRA on every attention projection and MLP of the DiT: the adapter for a new look or subject.

  sora-jax finetune --base=runs/base --config=configs/finetune/lora.py --workdir=runs/lora \
      --config.data.clips=DIR   # or data.latents, or the shapes with data.camera

Keys here are laid over the base run's config (`--config.KEY=VALUE` overrides the keys named here); any of them can be overridden with --config.KEY.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.adapter = dict(
      kind="lora",
      rank=8,
      alpha=8.0,
      targets=(r"(self_attn|cross_attn)/(query|key|value|out)$", r"mlp/fc[12]$"),
      block_patterns=(),
  )
  c.data = dict(num_examples=600)
  c.train = dict(steps=600, lr=2e-3, warmup=50, checkpoint_every=200)
  c.sample = dict(adapter_eval_seeds=3)  # held-out prompts x seeds, sampled with and without it
  return ml_collections.ConfigDict(c)

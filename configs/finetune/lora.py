"""LoRA on every attention projection and MLP of the DiT: the adapter for a new look or subject.

  sora-jax finetune --base=runs/base --config=configs/finetune/lora.py --workdir=runs/lora \
      --config.data.clips=DIR   # or data.latents, or the shapes with data.camera

Keys here are laid over the base run's config
(`--config.KEY=VALUE` overrides any adapter key and the other keys named here).
"""

from sora_jax.config import finetune_config


def get_config():
  return finetune_config(
      adapter=dict(
          kind="lora",
          rank=8,
          alpha=8.0,
          targets=(r"(self_attn|cross_attn)/(query|key|value|out)$", r"mlp/fc[12]$"),
          block_patterns=(),
      ),
      data=dict(num_examples=600),
      train=dict(steps=600, lr=2e-3, warmup=50, checkpoint_every=200),
      sample=dict(adapter_eval_seeds=3),  # held-out prompts x seeds, sampled with and without it
  )

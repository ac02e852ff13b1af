"""Tora (Zhang et al., 2024): trajectory control added to a frozen DiT.

  sora-jax train --config=configs/shapes.py --workdir=runs/shapes
  sora-jax finetune --base=runs/shapes --config=configs/finetune/tora.py --workdir=runs/tora
  sora-jax sample --workdir=runs/shapes --adapter=runs/tora --prompt="a red circle moves" \\
      --trajectory=docs/examples/trajectory.json --draw_trajectory --output=tora.mp4

The clips are the shapes moving along Bezier curves, zig-zags, circles and lines with a stop,
their captions naming no direction ("a red circle moves on a plain background"). Each example
is given its shape's dense flow or its centroid's track alone (Tora's two stages, mixed), as
maps of each frame's move and where the point is (data/trajectory.py), made into motion tokens
by a learned strided causal 3D conv (`--config.adapter.extractor=vae`: Tora's, the maps as a
flow-coloured video through the frozen VAE); the extractor and the per-block fusers
(models/motion.py) train, the base stays frozen. On the main job: TrajError 0.041 on held-out
paths (the VAE extractor: 0.047; `--config.adapter.levels=4`, Tora's hierarchical
extractor with a level per block: 0.081) against 0.300 without control, 26-32 min on 2 CPU cores
(docs/benchmarks.md, "Tora"). Keys here are laid over the base run's config
(`--config.KEY=VALUE` overrides any adapter key and the other keys named here).
"""

from sora_jax.config import finetune_config


def get_config():
  return finetune_config(
      adapter=dict(kind="tora", extractor="conv", sigma=0.06, dense_share=0.5),  # conv: measured best
      data=dict(tracks=("bezier", "zigzag", "circle", "stop"), num_examples=600),
      train=dict(steps=6000, lr=1e-3, warmup=50, checkpoint_every=1000),
      sample=dict(adapter_eval_seeds=3),  # held-out prompts x seeds, with the adapter and without
  )

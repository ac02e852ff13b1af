"""Learning-rate transfer across 8x width, standard vs muP, on the shapes data (2 CPU cores).

Does the best learning rate move by more than one 2x step from width 32 to 256? 2 widths x 8
learning rates x 2 parametrisations, 300 steps each (about 6.5e13 training FLOPs, the widths at a
fixed head size of 32: 1 and 8 heads), scored by the validation loss:
  sora-jax sweep --config=configs/sweeps/lr_transfer.py --workdir=runs/lr_transfer
  sora-jax fit --sweep=runs/lr_transfer   # lr_transfer.png and the best lr per width in fit.json
"""

import ml_collections


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "../shapes.py"
  s.overrides = (
      ("train.steps", 300),
      ("train.warmup", 30),
      ("train.log_every", 100),
      ("train.checkpoint_every", 200),
      ("train.keep_checkpoints", 1),
      ("model.depth", 2),
      ("model.mup_base_width", 32),
      ("model.mup_base_head_dim", 32),
  )
  s.sizes = ()  # the base model, its width and heads set below (head size 32)
  s.budgets = ()
  s.min_steps = 1
  s.max_steps = 10_000
  s.grid = (
      ("model.parametrization", ("standard", "mup")),
      ("train.lr", (5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2)),
  )
  s.zip = (("model.width", (32, 256)), ("model.num_heads", (1, 8)))
  s.seeds = (0,)
  s.validate_every = 0
  s.evaluate = False
  return s

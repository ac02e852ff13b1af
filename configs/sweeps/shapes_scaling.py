"""Scaling study on the shapes data, on 2 CPU cores: 4 family sizes x 4 iso-FLOP budgets (64x).

The budgets are 4x apart, so the frontier and the grid span 64x compute; each budget keeps the
sizes that train 30-6000 steps on it (12 cells, about 6.5e13 training FLOPs).

`sora-jax sweep --config=configs/sweeps/shapes_scaling.py --workdir=runs/scaling`, then
`sora-jax fit --sweep=runs/scaling`. Cells share one VAE and latent cache (the base config's).
"""

import ml_collections


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "../shapes.py"  # the experiment config every cell starts from (relative to this file)
  # Applied to every cell: dotted config keys.
  s.overrides = (("train.log_every", 50), ("train.checkpoint_every", 200), ("train.keep_checkpoints", 1))
  s.sizes = (1, 2, 3, 4)  # family depths (width 64 d, d heads)
  s.budgets = (
      2.5e11,
      1e12,
      4e12,
      1.6e13,
  )  # training FLOPs per cell: each size trains the steps that spend it
  s.min_steps = 30  # a (size, budget) pair with fewer steps than this is left out, and listed
  s.max_steps = 6000
  s.grid = ()  # (("train.lr", (1e-3, 2e-3, 4e-3)),): the product of these overrides
  s.zip = ()  # overrides zipped together, each entry joined with every grid point
  s.seeds = (0,)
  s.validate_every = 0  # validation loss every N steps (0: at the end only)
  s.evaluate = True  # the shapes scores of each cell (text-to-video, held-out prompts)
  return s

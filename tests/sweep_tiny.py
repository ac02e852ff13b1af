"""A tiny sweep for the tests: 2 sizes x 2 budgets on configs/shapes.py:tiny."""

import ml_collections


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "../configs/shapes.py:tiny"
  s.overrides = (("train.checkpoint_every", 2), ("validation.train_sample", 4))
  s.sizes = (1, 2)
  s.budgets = (8 * 69915624.0, 4 * 544293360.0)  # d1: 8 steps, d2: 4 steps (the other size left out)
  s.min_steps = 2
  s.max_steps = 12
  s.grid = ()
  s.zip = ()
  s.seeds = (0,)
  s.validate_every = 0
  s.evaluate = False
  return s

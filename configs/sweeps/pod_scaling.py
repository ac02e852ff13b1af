"""Scaling study of the model family on a v5p-256 pod (the 8B config's data, mesh and batch).

Check it here first, on any machine with the `tpu` extra: every cell is resolved and its train
step compiled ahead for the slice (memory fit, roofline with ICI), nothing trained:
  sora-jax sweep --config=configs/sweeps/pod_scaling.py --plan
Then on the pod (launch/gke_sweep_jobset.yaml: one sweep worker per slice):
  sora-jax sweep --distributed --config=configs/sweeps/pod_scaling.py --workdir=/gcs/sweeps/pod \\
    --worker=$WORKER --num_workers=$SLICES
"""

import ml_collections


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "../sora_8b.py:v5p"
  s.overrides = (
      ("train.checkpoint_every", 1000),
      ("model.parametrization", "mup"),
      ("model.mup_base_width", 1024),
      ("model.mup_base_head_dim", 64),
  )
  s.sizes = (8, 16, 24, 32)  # width 512-2048: 48M-3.0B parameters at the shapes mix
  s.budgets = (1e20, 3e20, 1e21)
  s.min_steps = 2000
  s.max_steps = 200_000
  s.grid = ()
  s.zip = ()
  s.seeds = (0,)
  s.validate_every = 5000
  s.evaluate = False  # real video: the validation loss is the score (the shapes evaluator is for shapes)
  s.topology = "v5p-256"  # every distinct cell compiled ahead for this slice before any starts
  return s

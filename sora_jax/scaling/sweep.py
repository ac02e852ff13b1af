"""`sora-jax sweep`: a scaling study as cells, each a training run in a folder keyed by the hash
of its resolved config.

A sweep config (configs/sweeps/*.py) names a base experiment config and declares the cells: the
family sizes (scaling/family.py), iso-FLOP budgets (per budget each size trains for the steps
that spend it, within 1 %), a product grid and zipped lists of config overrides (e.g. learning
rates), and seeds. Every cell is resolved and validated before any starts; a cell that cannot
run is refused with one line naming it.

DIR/sweep.json records the sweep's spec: a folder written by another spec is refused. Cells
live in DIR/cells/<hash>/ (the run's workdir: checkpoints, TensorBoard, validation) with a
status.json written atomically (queued / running / done / failed / diverged), so rerunning
skips done cells and resumes a partial one from its last checkpoint (training resumes
bit-identically, train/loop.py); a kill -9 loses at most the running cell's steps since then.
Cells sharing the VAE stage (same seed, data and VAE settings) share one VAE and latent cache,
trained by worker 0 in DIR/shared/<hash>/. Workers split the cells statically
(`--worker=i --num_workers=n`: cell k is worker k mod n's), so nothing needs a lock; launch/
runs one worker per TPU slice or per GKE indexed-Job pod.
"""

import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import time
import traceback

import jax
import ml_collections

from sora_jax.config import ConfigError, validate
from sora_jax.files import write_json
from sora_jax.scaling.family import data_mix_grids, member, mix_padding, size_row
from sora_jax.train.validation import VALIDATION_FILE

STATUSES = ("queued", "running", "done", "failed", "diverged")
FLOP_TOLERANCE = 0.01


def load_sweep(path):
  """The sweep config module's get_config() (an ml_collections ConfigDict)."""
  if not os.path.isfile(path):
    raise ConfigError(f"--config={path}: no such sweep config file")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sweep = module.get_config()
  sweep.base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), sweep.base))
  return sweep


def base_config(sweep):
  path, _, variant = sweep.base_path.partition(":")
  spec = importlib.util.spec_from_file_location("base_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant or None)


def set_key(config, key, value, cell="every cell"):
  """config.<key> = value for a dotted key; an unknown key is one line naming it."""
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise ConfigError(f"sweep override {key}={value!r} ({cell}): {key!r} is not a key of the config")
    node = node[p]
  if leaf not in node:
    raise ConfigError(f"sweep override {key}={value!r} ({cell}): {key!r} is not a key of the config")
  old = node[leaf]
  node[leaf] = tuple(value) if isinstance(old, tuple) and isinstance(value, (list, tuple)) else value


def config_hash(config):
  return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _combinations(sweep):
  """Override dicts: the product of `grid` entries, each joined with one entry of `zip`."""
  grid = [[(k, v) for v in values] for k, values in sweep.grid]
  product = [dict(c) for c in itertools.product(*grid)] if grid else [{}]
  zipped = (
      [dict(zip([k for k, _ in sweep.zip], vs)) for vs in zip(*[v for _, v in sweep.zip])]
      if sweep.zip
      else [{}]
  )
  return [{**p, **z} for p in product for z in zipped]


def cells(sweep):
  """(every cell, resolved and validated: [{"name", "hash", "config", "flops", ...}], the names
  of (size, budget) pairs left out: a budget too small for a size's `min_steps`, or too large for
  its `max_steps`). A budget that no size can meet is refused."""
  base = base_config(sweep)
  for key, value in sweep.overrides:
    set_key(base, key, value)
  out, left_out, fits = [], [], {}
  for seed, depth, budget, extra in itertools.product(
      sweep.seeds, sweep.sizes or (None,), sweep.budgets or (None,), _combinations(sweep)
  ):
    # No sizes: the base config's model, sized by the overrides (e.g. model.width in `zip`).
    name = (
        (f"d{depth}" if depth else "base")
        + (f"_C{budget:.3g}" if budget else "")
        + "".join(f"_{k}={v}" for k, v in extra.items())
    )
    name += f"_seed{seed}"
    try:
      c = member(base, depth) if depth else base.copy_and_resolve_references()
      c.seed = seed
      for key, value in extra.items():
        set_key(c, key, value, name)
      flops_per_step = step_flops(c)
      if budget:
        c.train.steps = round(budget / flops_per_step)
        spent = c.train.steps * flops_per_step
        if (
            not sweep.min_steps <= c.train.steps <= sweep.max_steps
            or abs(spent - budget) > FLOP_TOLERANCE * budget
        ):
          left_out.append(f"{name} ({c.train.steps} steps)")
          continue
        c.train.warmup = min(c.train.warmup, max(1, c.train.steps // 10))
      c.validation.every = sweep.validate_every or c.train.steps
      validate(c)
      fit = pod_fit(c, sweep.get("topology"), fits)
    except ConfigError as e:
      raise ConfigError(f"sweep cell {name}: {e}") from None
    out.append(
        {
            "name": name,
            "hash": config_hash(c),
            "config": c,
            "overrides": extra,
            "evaluate": sweep.evaluate,
            "aot": fit,
            "flops": c.train.steps * flops_per_step,
            "depth": depth,
            "seed": seed,
            "budget": budget,
        }
    )
  for budget in sweep.budgets or ():
    if not any(cell["budget"] == budget for cell in out):
      raise ConfigError(
          f"sweep budget {budget:.3g} FLOPs: no size trains {sweep.min_steps}-{sweep.max_steps} steps "
          f"on it within {FLOP_TOLERANCE:.0%} (left out: {', '.join(left_out)})"
      )
  return out, left_out


def pod_fit(config, topology, cache):
  """With a sweep `topology`: the train step compiled ahead for that TPU slice (aot.py), once per
  distinct model and batch; a cell that does not fit is refused. None without a topology."""
  if not topology:
    return None
  c = config.copy_and_resolve_references()
  c.seed, c.train.steps, c.train.warmup, c.validation.every = 0, 1, 1, 0  # what the compile ignores
  key = config_hash(c)
  if key not in cache:
    from sora_jax import aot  # libtpu: only for pod sweeps

    train = aot.compile_report(config, topology)["reports"][0]
    cache[key] = {
        k: train.get(k)
        for k in (
            "fits",
            "memory_per_chip_gib",
            "hbm_per_chip_gib",
            "temp_needed_gib",
            "roofline_mfu",
            "roofline_with_ici_mfu",
            "ici_seconds",
        )
    }
  fit = cache[key]
  if not fit["fits"]:
    needed = fit.get("memory_per_chip_gib") or fit.get("temp_needed_gib")
    raise ConfigError(f"does not fit {topology}: needs {needed} GiB per chip of {fit['hbm_per_chip_gib']}")
  return fit


def step_flops(config):
  """Training FLOPs of one step: model FLOPs per real token over the data mix times the real
  tokens of a step (rows x row length less the packing's padding)."""
  grids = data_mix_grids(config)
  padding = mix_padding(config, grids)
  row = size_row(config, grids, padding)
  return row["train_flops_per_token"] * config.train.rows * config.train.row_length * (1 - padding)


def spec_of(sweep, resolved):
  return {"sweep": sweep.to_dict(), "cells": [c["hash"] for c in resolved]}


def check_folder(workdir, sweep, resolved):
  """DIR/sweep.json holds the spec this folder was made for: another sweep's is refused."""
  path = os.path.join(workdir, "sweep.json")
  spec = spec_of(sweep, resolved)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f)["spec"] != json.loads(json.dumps(spec, default=str)):
        raise ConfigError(f"{workdir} holds a different sweep (sweep.json); give a new --workdir")
  elif not jax.process_index():
    write_json(path, {"spec": json.loads(json.dumps(spec, default=str))})


def status(workdir, cell):
  path = os.path.join(workdir, "cells", cell["hash"], "status.json")
  if not os.path.exists(path):
    return {"status": "queued"}
  with open(path) as f:
    return json.load(f)


def _set_status(workdir, cell, state, **extra):
  if jax.process_index():  # hosts of a multi-host worker run the cell together; one writes
    return
  record = {
      "status": state,
      "name": cell["name"],
      "hash": cell["hash"],
      "depth": cell["depth"],
      "seed": cell["seed"],
      "budget": cell["budget"],
      "flops": cell["flops"],
      "overrides": cell["overrides"],
      "steps": cell["config"].train.steps,
      "aot": cell["aot"],
      **extra,
  }
  write_json(os.path.join(workdir, "cells", cell["hash"], "status.json"), record)


def _shared_key(config):
  return config_hash(
      ml_collections.ConfigDict(
          {
              "seed": config.seed,
              "data": config.data.to_dict(),
              "vae": config.vae.to_dict(),
              "vae_train": config.vae_train.to_dict(),
          }
      )
  )


def shared_stage(workdir, config, mesh, wait):
  """DIR/shared/<hash>/: the VAE and latent cache of cells with these VAE settings (worker 0
  trains them; other workers wait for its `ready` file)."""
  from sora_jax.train.dit_stage import latent_cache
  from sora_jax.train.vae_stage import train_vae

  path = os.path.join(workdir, "shared", _shared_key(config))
  ready = os.path.join(path, "ready")
  if wait:
    while not os.path.exists(ready):
      time.sleep(10)
    return path
  if not os.path.exists(ready):
    vae, vae_params = train_vae(config, path, mesh)
    latent_cache(config, path, vae, vae_params)
    if not jax.process_index():
      write_json(ready, {"done": True})
  return path


def run_cell(workdir, cell, mesh, worker):
  """Train one cell in its folder (resuming it), then its validation loss and shapes scores."""
  from sora_jax import pipeline
  from sora_jax.generate import Pipeline, sample_settings
  from sora_jax.train.dit_stage import CACHE_FILE, train_dit
  from sora_jax.train.loop import TrainingDiverged
  from sora_jax.train.vae_stage import train_vae

  config = cell["config"]
  folder = os.path.join(workdir, "cells", cell["hash"])
  shared = shared_stage(workdir, config, mesh, wait=worker != 0)
  os.makedirs(os.path.join(folder, "checkpoints"), exist_ok=True)
  write_json(os.path.join(folder, "config.json"), config.to_dict())
  if not os.path.exists(os.path.join(folder, "checkpoints", "vae")):
    shutil.copytree(os.path.join(shared, "checkpoints", "vae"), os.path.join(folder, "checkpoints", "vae"))
  if not os.path.exists(os.path.join(folder, CACHE_FILE)):
    os.link(os.path.join(shared, CACHE_FILE), os.path.join(folder, CACHE_FILE))
  # The validation set depends on the VAE and data only: one encoding serves the group's cells.
  shared_set, own_set = os.path.join(shared, VALIDATION_FILE), os.path.join(folder, VALIDATION_FILE)
  if os.path.exists(shared_set) and not os.path.exists(own_set):
    os.link(shared_set, own_set)
  _set_status(workdir, cell, "running")
  try:
    vae, vae_params = train_vae(config, folder, mesh)  # restores the shared VAE
    dit, params, stats = train_dit(config, folder, vae, vae_params, mesh)
  except TrainingDiverged as e:
    _set_status(workdir, cell, "diverged", error=str(e))
    return
  from sora_jax.data.latents import write_stats
  from sora_jax.generate import LATENT_STATS_FILE

  write_stats(os.path.join(folder, LATENT_STATS_FILE), stats)
  if os.path.exists(own_set) and not os.path.exists(shared_set) and not jax.process_index():
    os.link(own_set, shared_set)
  with open(os.path.join(folder, "validation", f"step_{config.train.steps}.json")) as f:
    validation = json.load(f)
  scores = None
  if cell["evaluate"]:
    pipe = Pipeline(config, vae, vae_params, dit, params, stats)
    scores = pipeline.evaluate(pipe, folder, seed=0, modes="none", **sample_settings(config))
  _set_status(
      workdir,
      cell,
      "done",
      validation_loss=validation["mean"],
      validation_standard_error=validation["standard_error"],
      scores=scores,
  )


def plan(path):
  """`sora-jax sweep --plan`: every cell resolved, validated (and compiled ahead for a pod
  sweep's topology), nothing trained or written."""
  resolved, left_out = cells(load_sweep(path))
  return {
      "cells": [
          {
              "name": c["name"],
              "hash": c["hash"],
              "steps": c["config"].train.steps,
              "flops": c["flops"],
              "aot": c["aot"],
          }
          for c in resolved
      ],
      "left_out": left_out,
  }


def run_sweep(path, workdir, worker=0, num_workers=1):
  """Run this worker's cells that are not done; returns {status: count} over all cells."""
  from sora_jax.parallel.mesh import make_mesh

  if not 0 <= worker < num_workers:
    raise ConfigError(f"--worker={worker} must be in [0, --num_workers={num_workers})")
  sweep = load_sweep(path)
  resolved, left_out = cells(sweep)  # every cell validated before any starts
  os.makedirs(workdir, exist_ok=True)
  check_folder(workdir, sweep, resolved)
  mesh = None
  for k, cell in enumerate(resolved):
    if k % num_workers != worker or status(workdir, cell)["status"] in ("done", "diverged"):
      continue
    mesh = mesh or make_mesh(cell["config"].mesh)
    try:
      run_cell(workdir, cell, mesh, worker)
    except Exception as e:  # noqa: BLE001 - a failed cell is recorded and the sweep goes on
      _set_status(
          workdir,
          cell,
          "failed",
          error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
          traceback=traceback.format_exc(limit=5),
      )
  return summary(workdir, resolved, left_out)


def summary(workdir, resolved, left_out=()):
  """{"cells": {status: count}, "left_out": [...]} over every cell of the sweep."""
  counts = {s: 0 for s in STATUSES}
  for cell in resolved:
    counts[status(workdir, cell)["status"]] += 1
  return {"cells": counts, "left_out": list(left_out)}

"""Adapters: what `sora-jax finetune` trains on a frozen base, and how sampling applies it.

An adapter is parameters the base does not have, trained while the base's stay fixed: LoRA's A
and B (nn/lora.py), or Tora's motion extractor and per-block fusers (models/motion.py, fed by
data/trajectory.py). The one seam every kind goes through:
  - `Adapter.of(config)`: the config's adapter (None for a run of its own), `check_adapter` its
    keys at start-up;
  - `adapter.context()`: the model's forward with the adapter in it (LoRA: nn/lora.py's hook;
    Tora: none, the DiT runs its fusers wherever motion tokens are given);
  - `new_params(full, base)` / `join(base, extra)`: the adapter's params apart from, or back
    with, the base's: the train state and the checkpoints hold the adapter's alone; `merged`
    folds LoRA into the kernels, and joins Tora's modules (its fusers scaled by the weight);
  - a fine-tune's folder: adapter.json (kind, spec, the base's path, architecture and weights
    hash) beside checkpoints/adapter/; `apply_adapters` folds one or more into a base's
    weights for `sample --adapter=DIR[:WEIGHT]`, refusing an adapter trained on another base.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re

import flax.linen as nn
import jax
import numpy as np

from sora_jax.config import ConfigError, default_config
from sora_jax.files import write_json
from sora_jax.models.build import build_dit
from sora_jax.nn import lora as lora_lib

ADAPTER_FILE = "adapter.json"
CHECKPOINT_NAME = "adapter"  # the fit stage: DIR/checkpoints/adapter/
KINDS = ("lora", "tora")


def check_adapter(c):
  """The adapter keys of a config, one line naming the key."""
  a = c.adapter
  if a.kind not in ("",) + KINDS:
    raise ConfigError(f"adapter.kind={a.kind!r}; choose from {KINDS} (or '' for a run of its own)")
  if not a.kind:
    return
  if a.kind == "tora":
    _check_tora(c)
    return
  if a.rank < 1 or not a.alpha > 0:
    raise ConfigError(f"adapter.rank={a.rank}, adapter.alpha={a.alpha}: both must be positive")
  if not a.targets:
    raise ConfigError(
        "adapter.targets is empty: give regexes of the layers to adapt, e.g. 'self_attn/query$'"
    )
  for target in a.targets:
    try:
      re.compile(target)
    except re.error as e:
      raise ConfigError(f"adapter.targets entry {target!r} is not a regular expression: {e}") from None
  missing = [p for p in a.block_patterns if p not in c.model.attention_patterns]
  if missing:
    raise ConfigError(
        f"adapter.block_patterns={tuple(a.block_patterns)}: this model has no {missing[0]!r} blocks "
        f"(model.attention_patterns={tuple(c.model.attention_patterns)}); MotionLoRA needs a base with "
        "temporal attention, e.g. configs/shapes.py:factorized"
    )


def _check_tora(c):
  from sora_jax.data.trajectory import EXTRACTORS

  a = c.adapter
  if a.extractor not in EXTRACTORS:
    raise ConfigError(f"adapter.extractor={a.extractor!r}; choose from {EXTRACTORS}")
  if not 0.0 < a.sigma <= 1.0:
    raise ConfigError(f"adapter.sigma={a.sigma}: the Gaussian's std as a share of min(H, W), in (0, 1]")
  if not 0.0 <= a.dense_share <= 1.0:
    raise ConfigError(f"adapter.dense_share={a.dense_share} is a share; it must be in [0, 1]")
  if not 1 <= a.levels <= c.model.depth:
    raise ConfigError(
        f"adapter.levels={a.levels}: the motion extractor's levels run from 1 (one feature for every "
        f"block) to model.depth={c.model.depth} (one per block)"
    )
  if c.data.latents or c.data.clips:
    raise ConfigError(
        "adapter.kind=tora trains on the shapes generator's tracks (data.tracks); data.latents / "
        "data.clips carry no tracks (a point tracker for real clips is not built)"
    )


@dataclasses.dataclass(frozen=True)
class Tora:
  """A Tora adapter's settings: how trajectories become motion tokens (data/trajectory.py)."""

  extractor: str
  sigma: float
  levels: int = 1  # the extractor's feature levels (models/motion.py)


@dataclasses.dataclass(frozen=True)
class Adapter:
  kind: str
  lora: lora_lib.LoraSpec = None
  tora: Tora = None

  @classmethod
  def of(cls, config):
    return cls.of_section(config.adapter)

  @classmethod
  def of_section(cls, a):
    """From a config's `adapter` section, or adapter.json's (a dict): None where kind is ''."""
    if not a["kind"]:
      return None
    if a["kind"] == "tora":
      return cls("tora", tora=Tora(a["extractor"], float(a["sigma"]), int(a.get("levels", 1))))
    spec = lora_lib.LoraSpec(a["rank"], float(a["alpha"]), tuple(a["targets"]), tuple(a["block_patterns"]))
    return cls(a["kind"], spec)

  def context(self, seen=None):
    return contextlib.nullcontext() if self.tora else lora_lib.lora(self.lora, seen)

  def merged(self, base, extra, weight=1.0):
    """The base's params with this adapter's (`extra`) folded in, x weight: LoRA's the base
    architecture's params; Tora's the base's beside its modules, each fuser's gamma and beta
    x weight (its strength; motion reaches them only where a trajectory is given)."""
    if self.tora:
      scale = lambda path, x: x * weight if "gamma_beta" in jax.tree_util.keystr(path) else x
      return join(base, jax.tree_util.tree_map_with_path(scale, extra))
    return lora_lib.merge(join(base, extra), weight * self.lora.scale)

  def check_targets(self, trace):
    """Run `trace()` (e.g. an eval_shape of the model's init) with the adapter: every target must
    choose a layer, else one line naming it and the layers there are (LoRA; Tora has none)."""
    if self.tora:
      return {}
    seen = {}
    with self.context(seen):
      shapes = nn.meta.unbox(trace())
    for target in self.lora.targets:
      if target not in seen:
        layers = sorted(
            {
                re.sub(r"block_\d+", "block_N", "/".join(str(getattr(k, "key", k)) for k in path[:-1]))
                for path, _ in jax.tree_util.tree_leaves_with_path(shapes)
                if getattr(path[-1], "key", None) == "kernel"
            }
        )
        where = f" in {self.lora.block_patterns} blocks" if self.lora.block_patterns else ""
        raise ConfigError(
            f"adapter.targets entry {target!r} matches no Dense layer{where}; the layers: "
            f"{', '.join(layers)}"
        )
    return seen


def new_params(full, base):
  """The part of the `full` param tree that `base` (a tree of the same model without the
  adapter; any leaves, e.g. shapes) does not have."""
  out = {}
  for key, value in full.items():
    if key not in base:
      out[key] = value
    elif isinstance(value, dict):
      sub = new_params(value, base[key])
      if sub:
        out[key] = sub
  return out


def join(base, extra):
  """`base` with the subtrees of `extra` added (new_params' inverse)."""
  out = dict(base)
  for key, value in extra.items():
    out[key] = join(base[key], value) if key in base and isinstance(value, dict) else value
  return out


def weights_hash(params):
  """sha256 of a param tree's names, shapes, dtypes and bytes: a base's identity."""
  digest = hashlib.sha256()
  for path, leaf in sorted(
      jax.tree_util.tree_leaves_with_path(params), key=lambda item: jax.tree_util.keystr(item[0])
  ):
    leaf = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _as_json(value):
  """`value` as JSON reads it back (tuples as lists): what adapter.json's values compare with."""
  return json.loads(json.dumps(value))


def write_identity(workdir, config, base_dir, base_hash):
  """adapter.json of a fine-tune folder. A folder already trained on another base is refused."""
  path = os.path.join(workdir, ADAPTER_FILE)
  meta = _as_json(
      {
          "adapter": config.adapter.to_dict(),
          "base": {
              "workdir": os.path.abspath(base_dir),
              "weights_sha256": base_hash,
              "model": config.model.to_dict(),
          },
      }
  )
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    # Keys newer than the folder take their defaults (an older Tora folder had no levels).
    old_adapter = {**_as_json(default_config().adapter.to_dict()), **old["adapter"]}
    if old["base"]["weights_sha256"] != base_hash or old_adapter != meta["adapter"]:
      raise ConfigError(
          f"{workdir} holds a fine-tune of another base or adapter ({old['base']['workdir']}, "
          f"{old['adapter']['kind']}); give a new --workdir"
      )
  write_json(path, meta)


def parse_adapter_flag(text):
  """'DIR' or 'DIR:WEIGHT' -> (DIR, weight)."""
  folder, _, weight = text.rpartition(":") if re.search(r":-?[\d.]+$", text) else (text, "", "1")
  try:
    return folder, float(weight)
  except ValueError:
    raise ConfigError(f"--adapter={text}: the weight after ':' must be a number") from None


def load_adapter(folder):
  """(Adapter, adapter.json dict, the adapter's EMA params) of a fine-tune folder."""
  from sora_jax.train.checkpoint import Checkpointer

  path = os.path.join(folder, ADAPTER_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f"--adapter={folder}: no {ADAPTER_FILE} (a `sora-jax finetune --workdir` folder)")
  with open(path) as f:
    meta = json.load(f)
  ckpt = Checkpointer(os.path.join(folder, "checkpoints", CHECKPOINT_NAME))
  saved = ckpt.restore_saved()
  ckpt.close()
  if saved is None:
    raise ConfigError(f"--adapter={folder}: no adapter checkpoint yet (its finetune has not saved a step)")
  return Adapter.of_section(meta["adapter"]), meta, saved["ema_params"]


def apply_adapters(pipe, flags):
  """The pipeline with each `--adapter=DIR[:WEIGHT]` folded into its DiT weights (in order):
  sampling then runs the base architecture at its own speed. An adapter trained on a base of
  another architecture or other weights is refused."""
  if not flags:
    return pipe
  params, base_hash = pipe.dit_params, weights_hash(pipe.dit_params)
  model = _as_json(pipe.config.model.to_dict())
  for text in flags:
    folder, weight = parse_adapter_flag(text)
    adapter, meta, extra = load_adapter(folder)
    trained_on = meta["base"]
    if model != trained_on["model"]:
      diff = [k for k in model if model[k] != trained_on["model"].get(k)]
      raise ConfigError(
          f"--adapter={folder} was trained on a base of another architecture (model.{diff[0]}: "
          f"{trained_on['model'].get(diff[0])} there, {model[diff[0]]} here)"
      )
    if trained_on["weights_sha256"] != base_hash:
      raise ConfigError(
          f"--adapter={folder} was trained on other base weights ({trained_on['workdir']}, sha256 "
          f"{trained_on['weights_sha256'][:12]}; this base {base_hash[:12]})"
      )
    params = adapter.merged(params, extra, weight)
    if adapter.tora:  # sampling then takes trajectories, made into tokens as this adapter's were
      config = pipe.config.copy_and_resolve_references()
      for key in ("kind", *(f.name for f in dataclasses.fields(Tora))):  # the settings of_section reads
        config.adapter[key] = meta["adapter"].get(key, config.adapter[key])  # older ones lack levels
      pipe = dataclasses.replace(pipe, config=config, dit=build_dit(config))
  return dataclasses.replace(pipe, dit_params=params)

"""`sora-jax export`: a run's weights as a diffusers-style folder of safetensors, and back.

OUT/
  model_index.json        the components and their classes, the export's dtype / weights / step,
                          and the run's full config (sampler defaults, diffusion settings), so
                          `Pipeline.load(OUT)` is the workdir's pipeline without the workdir
  transformer/            the DiT without its text encoder: config.json (the `model` section, the
                          patch size in channels and the latent statistics) and
                          diffusion_pytorch_model.safetensors (sharded with an index past the limit)
  vae/                    the causal VAE: config.json (the `vae` section) and its safetensors
  text_encoder/           the caption encoder: the hashed one's config.json and model.safetensors,
                          or a frozen T5 / UMT5 as a Hugging Face T5 encoder folder (its
                          config.json, tokenizer and encoder weights under their usual names)
  README.md               a model card: training config, steps, training FLOPs, evaluation figures

Names are the parameter paths joined with dots. The folder is written beside OUT and renamed
onto it when complete, so a failed export leaves nothing that reads as one; an existing OUT is
refused. Float32 exports load back bit-exact; bfloat16 halves the size.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sora_jax.config import ConfigError, default_config
from sora_jax.files import write_json
from sora_jax.models.build import frozen_encoder
from sora_jax.models.t5 import write_t5_folder
from sora_jax.weights import DEFAULT_SHARD_BYTES, flatten, read_tree, write_safetensors

MODEL_INDEX = "model_index.json"
FORMAT_VERSION = 1
TEXT = "text_encoder"  # the caption encoder (the DiT's submodule, or a frozen T5), its own component
COMPONENTS = {  # component -> (class, weights file base)
    "transformer": ("DiT", "diffusion_pytorch_model"),
    "vae": ("CausalVAE", "diffusion_pytorch_model"),
    TEXT: ("HashedWordEncoder", "model"),
}
T5_CLASS = "T5EncoderModel"  # the text component's class with model.text.kind = t5
DTYPES = ("float32", "bfloat16")


def export_run(
    workdir,
    output,
    *,
    dtype="float32",
    weights="ema",
    max_shard_bytes=DEFAULT_SHARD_BYTES,
    serving=False,
    adapters=(),
):
  """Write OUT from the workdir's latest checkpoints (and with `serving`, the jax.export
  artefacts of serving.py), with `adapters` (`--adapter` values: fine-tune folders, DIR[:WEIGHT])
  merged into the DiT; returns model_index.json's contents."""
  from sora_jax.adapters import apply_adapters
  from sora_jax.generate import Pipeline
  from sora_jax.train.checkpoint import Checkpointer

  if dtype not in DTYPES:
    raise ConfigError(f"--dtype={dtype}: choose {' or '.join(DTYPES)}")
  if weights not in ("ema", "raw"):
    raise ConfigError(f"--weights={weights}: choose ema (what sampling uses) or raw")
  if os.path.exists(output):
    raise ConfigError(f"--output={output} already exists: export writes a new folder")
  pipe = apply_adapters(Pipeline.load(workdir, weights=weights), adapters)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", "dit"))
  step = ckpt.latest_step()
  ckpt.close()
  cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
  dit_params = dict(pipe.dit_params)
  config = pipe.config
  frozen = frozen_encoder(config)
  text = dit_params.pop(TEXT) if frozen is None else frozen.params
  parts = {"transformer": dit_params, "vae": pipe.vae_params, TEXT: text}
  classes = {name: cls for name, (cls, _) in COMPONENTS.items()} | ({TEXT: T5_CLASS} if frozen else {})
  configs = {
      "transformer": {
          "model": config.model.to_dict(),
          "patch_dim": int(pipe.dit.patch_dim),
          "latent_stats": {
              "mean": np.asarray(pipe.latent_stats[0]).tolist(),
              "std": np.asarray(pipe.latent_stats[1]).tolist(),
          },
      },
      "vae": config.vae.to_dict(),
      TEXT: config.model.text.to_dict(),
  }
  index = {
      "_class_name": "SoraJaxPipeline",
      "format_version": FORMAT_VERSION,
      **{name: ["sora_jax", cls] for name, cls in classes.items()},
      "dtype": dtype,
      "weights": weights,
      "step": step,
      "adapters": [os.path.abspath(a) for a in adapters],  # merged into transformer/
      "config": config.to_dict(),
  }
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.incomplete-", dir=parent)
  try:
    for name, (cls, base) in COMPONENTS.items():
      folder = os.path.join(tmp, name)
      if name == TEXT and frozen is not None:
        write_t5_folder(folder, text, frozen.path, dtype, max_shard_bytes)
        continue
      write_safetensors(folder, base, flatten(cast(parts[name])), max_shard_bytes)
      write_json(os.path.join(folder, "config.json"), {"_class_name": cls, **configs[name]})
    if serving:
      from sora_jax.serving import SERVING, export_serving

      cast_pipe = dataclasses.replace(
          pipe, dit_params=cast(pipe.dit_params), vae_params=cast(pipe.vae_params)
      )
      manifest = export_serving(cast_pipe, tmp)
      index["serving"] = {
          "folder": SERVING,
          "platforms": manifest["platforms"],
          "symbolic": manifest["step_symbolic"],
      }
    write_json(os.path.join(tmp, MODEL_INDEX), index)
    with open(os.path.join(tmp, "README.md"), "w") as f:
      f.write(model_card(workdir, config, index, parts))
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return index


def model_card(workdir, config, index, parts):
  """OUT/README.md: what was trained, for how long, at what compute, and how it scored."""
  from sora_jax.scaling.sweep import step_flops

  counts = {name: int(sum(np.size(x) for x in jax.tree.leaves(tree))) for name, tree in parts.items()}
  lines = [
      "# sora_jax model",
      "",
      f"Exported from `{os.path.abspath(workdir)}` at DiT step {index['step']} ({index['weights']} weights, "
      f"{index['dtype']}).",
      "",
      "| component | class | parameters |",
      "|---|---|---|",
      *(f"| {name} | {index[name][1]} | {counts[name]:,} |" for name in COMPONENTS),
      "",
      f"Training: {config.train.steps} DiT steps of {config.train.rows} rows x {config.train.row_length} tokens, "
      f"about {index['step'] * step_flops(config):.3g} training FLOPs (the family's count, `sora-jax family`).",
      "",
      "Sample with `sora-jax sample --model=THIS_FOLDER --prompt=... --output=out.mp4`, or in Python "
      "`sora_jax.generate.Pipeline.load(THIS_FOLDER)`.",
  ]
  for file, title in (("eval.json", "Evaluation (held-out prompts)"), ("validation.json", "Validation loss")):
    path = os.path.join(workdir, file)
    if os.path.exists(path):
      with open(path) as f:
        report = json.load(f)
      shown = report.get("summary", report)
      shown = {k: v for k, v in shown.items() if not isinstance(v, (list, dict))}
      lines += ["", f"## {title}", "", "```json", json.dumps(shown, indent=1), "```"]
  lines += [
      "",
      "## Training config",
      "",
      "```json",
      json.dumps(config.to_dict(), indent=1, default=str),
      "```",
      "",
  ]
  return "\n".join(lines)


def load_exported(cls, folder, dit=True):
  """A `Pipeline` from an export folder; a missing component or file is one line naming it."""
  from sora_jax.generate import _with_defaults
  from sora_jax.models.build import build_dit, build_vae, dit_param_shapes

  with open(os.path.join(folder, MODEL_INDEX)) as f:
    index = json.load(f)
  if index.get("format_version", 0) > FORMAT_VERSION:
    raise ConfigError(f"{folder}: export format {index['format_version']} is newer than this sora_jax reads")
  for name in COMPONENTS:
    if not os.path.isdir(os.path.join(folder, name)):
      raise ConfigError(f"--model={folder}: the export has no {name}/ component")
  config = ml_collections.ConfigDict(_with_defaults(index["config"], default_config().to_dict()))
  if config.model.text.kind != "hashed":  # the frozen encoder is the export's own copy
    config.model.text.path = os.path.abspath(os.path.join(folder, TEXT))
  dtype = jnp.dtype(index["dtype"])
  vae = build_vae(config.vae)
  vae_like = jax.eval_shape(lambda: vae.init(jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3)))["params"])
  vae_params = read_tree(os.path.join(folder, "vae"), COMPONENTS["vae"][1], vae_like, dtype)
  if not dit:
    return cls(config, vae, vae_params, None, None, None)
  model = build_dit(config)
  like = dict(dit_param_shapes(config))
  text_like = like.pop(TEXT, None)
  params = read_tree(os.path.join(folder, "transformer"), COMPONENTS["transformer"][1], like, dtype)
  if text_like is not None:
    params[TEXT] = read_tree(os.path.join(folder, TEXT), COMPONENTS[TEXT][1], text_like, dtype)
  with open(os.path.join(folder, "transformer", "config.json")) as f:
    stats = json.load(f)["latent_stats"]
  latent_stats = (np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32))
  return cls(config, vae, vae_params, model, params, latent_stats)

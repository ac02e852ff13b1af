"""Weights as safetensors files: the one place that writes and reads them (export, the exported
pipeline's loader, the T5 encoder's loader).

A component's weights are `BASE.safetensors`, or past `max_shard_bytes` the shards
`BASE-0000k-of-0000n.safetensors` with `BASE.safetensors.index.json` ({"metadata":
{"total_size"}, "weight_map": {name: file}}), the layout transformers and diffusers write and
read. Tensors are written and read through safetensors' flax API, so bfloat16 round-trips.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import ConfigError
from sora_jax.files import atomic_path, write_json

DEFAULT_SHARD_BYTES = 5 * 2**30  # transformers' and diffusers' default shard size


def flatten(tree):
  """A parameter tree -> {"a.b.c": array}, names joined with dots as diffusers names them."""
  return {
      ".".join(str(p.key) for p in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def unflatten(flat):
  """{"a.b.c": array} -> nested dicts (the inverse of `flatten`)."""
  tree = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def write_safetensors(folder, base, tensors, max_shard_bytes=DEFAULT_SHARD_BYTES, metadata=None):
  """{name: array} -> FOLDER/BASE.safetensors, or shards and their index past the size limit.
  Shards are filled in name order, each up to the limit (a larger tensor alone)."""
  from safetensors.flax import save_file

  os.makedirs(folder, exist_ok=True)
  names = sorted(tensors)
  shards, current, size = [], [], 0
  for name in names:
    nbytes = tensors[name].nbytes
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(name)
    size += nbytes
  shards.append(current)
  files = (
      [f"{base}.safetensors"]
      if len(shards) == 1
      else [f"{base}-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
  )
  for file, shard in zip(files, shards):
    with atomic_path(os.path.join(folder, file)) as tmp:
      save_file({n: jnp.asarray(tensors[n]) for n in shard}, str(tmp), metadata=metadata)
  if len(shards) > 1:
    write_json(
        os.path.join(folder, f"{base}.safetensors.index.json"),
        {
            "metadata": {"total_size": int(sum(tensors[n].nbytes for n in names))},
            "weight_map": {n: file for file, shard in zip(files, shards) for n in shard},
        },
    )
  return files


def weight_files(folder, base):
  """{tensor name: file} of FOLDER/BASE.safetensors or of its sharded index."""
  from safetensors import safe_open

  index = os.path.join(folder, f"{base}.safetensors.index.json")
  if os.path.isfile(index):
    with open(index) as f:
      return {k: os.path.join(folder, v) for k, v in json.load(f)["weight_map"].items()}
  single = os.path.join(folder, f"{base}.safetensors")
  if not os.path.isfile(single):
    raise ConfigError(f"{folder}: no {base}.safetensors or {base}.safetensors.index.json")
  with safe_open(single, "flax") as f:
    return dict.fromkeys(f.keys(), single)


class TensorReader:
  """Reads named tensors from a {name: file} map, each file opened once; a missing name or a
  shape other than expected is one line naming the file and the tensor."""

  def __init__(self, files, where):
    self.files, self.where, self._open = files, where, {}

  def read(self, name, shape, dtype=None, transform=None, shown_shape=None):
    """The tensor `name`, checked against `shape` (None: any) and cast to `dtype` (None: as stored)."""
    from safetensors import safe_open

    if name not in self.files:
      raise ConfigError(f"{self.where}: the weights have no {name!r} ({len(self.files)} tensors)")
    file = self.files[name]
    if file not in self._open:
      self._open[file] = safe_open(file, "flax")
    value = self._open[file].get_tensor(name)
    value = transform(value) if transform else value
    if shape is not None and tuple(value.shape) != tuple(shape):
      shown = shown_shape or (lambda s: tuple(s))
      raise ConfigError(f"{file}: {name!r} has shape {shown(value.shape)}, expected {shown(shape)}")
    return jnp.asarray(value, dtype or value.dtype)


def read_tree(folder, base, like, dtype=None):
  """A parameter tree shaped as `like` (arrays or ShapeDtypeStructs) from FOLDER's BASE weights,
  named as `flatten` names them; float32 unless `dtype` (None: as stored)."""
  reader = TensorReader(weight_files(folder, base), folder)
  names = flatten(like)
  leaves = {name: reader.read(name, x.shape, dtype) for name, x in names.items()}
  extra = sorted(set(reader.files) - set(names))
  if extra:
    raise ConfigError(f"{folder}: weights {extra[:3]} are not parameters of this model ({len(extra)} extra)")
  treedef = jax.tree.structure(like)
  return jax.tree.unflatten(treedef, [leaves[n] for n in names])


def read_flat(folder, base):
  """Every tensor of FOLDER's BASE weights as {name: array}, as stored."""
  reader = TensorReader(weight_files(folder, base), folder)
  return {name: reader.read(name, None) for name in sorted(reader.files)}


def nbytes(tree):
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))

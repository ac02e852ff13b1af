"""A frozen pretrained caption encoder beside the DiT (`model.text.kind = "t5"`).

The encoder (models/t5.py: T5 v1.1 / UMT5, from a local Hugging Face folder) is never trained:
its weights are loaded once per process and are not in the train state, the optimizer or the
checkpoints, so a 4.7B-parameter T5-XXL costs no optimizer memory and no checkpoint bytes. The
DiT reads its output as `text_embeds` [..., Lt, D] in `model.text.embed_dtype` (bfloat16 by
default) next to `text_ids` (whose non-PAD entries are the mask). The embeddings are either
cached by `cache-latents` or computed on device for each batch by the same jitted function, in
the same dtype, so a cached batch and a computed one give the same loss.
"""

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sora_jax.models.t5 import T5Config, T5Encoder, T5Tokenizer, load_t5_params


class FrozenText:
  """Captions -> ids (the folder's tokenizer) -> embeddings (the folder's encoder, frozen)."""

  def __init__(self, path, max_len, dtype="float32", embed_dtype="bfloat16"):
    self.path, self.max_len = path, max_len
    self.config = T5Config.from_folder(path)
    self.tokenizer = T5Tokenizer(path)
    self.embed_dtype = jnp.dtype(embed_dtype)
    self.module = T5Encoder(self.config, dtype=jnp.dtype(dtype))
    self.dtype = jnp.dtype(dtype)
    self._params = None  # read at the first embedding: tokenizing alone needs no weights
    out = self.embed_dtype
    self._apply = jax.jit(lambda params, ids: self.module.apply({"params": params}, ids)[0].astype(out))

  @property
  def params(self):
    if self._params is None:
      self._params = load_t5_params(self.path, self.config, self.dtype)
    return self._params

  @property
  def dim(self):
    return self.config.d_model

  def ids(self, captions):
    """list[str] -> int32 [N, max_len] (</s> last, PAD = 0 after it)."""
    return self.tokenizer(captions, self.max_len)

  def embed(self, ids):
    """int ids [..., Lt] (numpy or a sharded jax array) -> embeddings [..., Lt, D], on device;
    padded positions are zero."""
    lead = ids.shape[:-1]
    flat = jnp.reshape(ids, (-1, ids.shape[-1]))
    return self._apply(self.params, flat).reshape(*lead, ids.shape[-1], self.dim)

  def shardings(self, mesh):
    """The weights' layout over `mesh`: each 2-D weight split on its model-width axis over
    fsdp x context (as the DiT's own weights are), the rest replicated, so a large encoder
    costs each chip its share rather than the whole."""
    ranks = mesh.shape["fsdp"] * mesh.shape["context"]

    def spec(x):
      axes = [None] * len(x.shape)
      for i, n in enumerate(x.shape):
        if len(x.shape) == 2 and n == self.dim and n % ranks == 0:
          axes[i] = ("fsdp", "context")
          break
      return NamedSharding(mesh, P(*axes))

    return jax.tree.map(spec, self.abstract_params())

  def abstract_params(self):
    """The weights' shapes and dtype from config.json alone (nothing read or computed)."""
    init = lambda: self.module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))["params"]
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, self.dtype), jax.eval_shape(init))

  def on_mesh(self, mesh):
    """Place the weights over `mesh` as `shardings` lays them out."""
    self._params = jax.tree.map(jax.device_put, self.params, self.shardings(mesh))
    return self

  def lower_embed(self, mesh, ids):
    """The encoder call lowered for `mesh` (compile-ahead: `sora-jax aot`), weights abstract."""
    shardings = self.shardings(mesh)
    params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self.abstract_params(), shardings
    )
    return self._apply.lower(params, ids)


@functools.lru_cache(maxsize=2)
def frozen_text(path, max_len, dtype, embed_dtype):
  """One FrozenText per (folder, settings) in a process: training, validation and sampling
  share the loaded weights."""
  return FrozenText(path, max_len, dtype, embed_dtype)


def identity(text_cfg):
  """What an embedding cache must match to be read by a run: the folder's config.json, its
  weight files (name, size and first MiB: the safetensors header lists every tensor's name,
  shape and offset; hashing a 10 GB file at each start is too slow), the prompt length and the
  output dtype. Copying the folder elsewhere keeps it."""
  from sora_jax.weights import weight_files

  digest = hashlib.sha256()
  with open(os.path.join(text_cfg.path, "config.json"), "rb") as f:
    digest.update(f.read())
  for file in sorted(set(weight_files(text_cfg.path, "model").values())):
    with open(file, "rb") as f:
      digest.update(f"{os.path.basename(file)}:{os.path.getsize(file)}".encode() + f.read(2**20))
  return {
      "kind": "t5",
      "weights": digest.hexdigest()[:16],
      "max_len": int(text_cfg.max_len),
      "embed_dtype": str(text_cfg.embed_dtype),
  }

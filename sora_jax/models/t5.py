"""A frozen pretrained text encoder: the T5 v1.1 / UMT5 encoder in Flax linen, built from a Hugging
Face model folder (config.json, model.safetensors or a sharded index, tokenizer.json or
spiece.model). Nothing is downloaded: the folder is what users already hold.

What distinguishes T5 from a textbook transformer, and is matched here (parity with transformers
is tested on tiny random models, tests/test_t5.py):
- RMSNorm without mean subtraction or bias (`T5LayerNorm`), before each sub-layer;
- attention logits are q.k with no 1/sqrt(d) scaling, plus a learned relative position bias
  (bidirectional log buckets): computed by the first layer and shared by all in T5, one per
  layer in UMT5;
- the feed-forward is gated GELU (tanh approximation) in v1.1 / UMT5, ReLU in the original T5;
- no biases anywhere.
Padded positions are zeroed in the output, and the mask says which are real.
"""

import dataclasses
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import ConfigError

MODEL_TYPES = ("t5", "umt5", "mt5")
EOS, PAD = 1, 0  # T5's ids for </s> and <pad>


@dataclasses.dataclass(frozen=True)
class T5Config:
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int
  num_heads: int
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"
  bias_per_layer: bool = False  # UMT5: every layer its own relative position bias

  @classmethod
  def from_folder(cls, path):
    """The encoder's settings from PATH/config.json; another architecture is refused."""
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
      raise ConfigError(f"model.text.path={path}: no config.json (a Hugging Face T5 / UMT5 folder)")
    with open(file) as f:
      raw = json.load(f)
    kind = raw.get("model_type")
    if kind not in MODEL_TYPES:
      raise ConfigError(f"{file}: model_type={kind!r} is not a T5 encoder ({', '.join(MODEL_TYPES)})")
    proj = raw.get("feed_forward_proj", "relu")
    if proj not in ("relu", "gated-gelu", "gated-relu"):
      raise ConfigError(f"{file}: feed_forward_proj={proj!r} is not supported (relu, gated-gelu, gated-relu)")
    try:
      return cls(
          vocab_size=raw["vocab_size"],
          d_model=raw["d_model"],
          d_kv=raw["d_kv"],
          d_ff=raw["d_ff"],
          num_layers=raw["num_layers"],
          num_heads=raw["num_heads"],
          relative_attention_num_buckets=raw.get("relative_attention_num_buckets", 32),
          relative_attention_max_distance=raw.get("relative_attention_max_distance", 128),
          layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-6),
          feed_forward_proj=proj,
          bias_per_layer=kind == "umt5",
      )
    except KeyError as e:
      raise ConfigError(f"{file}: no {e.args[0]!r} key") from None


def relative_position_bucket(relative_position, num_buckets, max_distance):
  """T5's bidirectional buckets of key - query offsets: exact below num_buckets / 4, then
  logarithmic up to max_distance, the sign in the top half."""
  num_buckets //= 2
  buckets = (relative_position > 0).astype(np.int32) * num_buckets
  distance = np.abs(relative_position)
  max_exact = num_buckets // 2
  # Clipped at 1 inside the log: the small distances take the exact branch anyway.
  large = max_exact + (
      np.log(np.maximum(distance, 1) / max_exact)
      / math.log(max_distance / max_exact)
      * (num_buckets - max_exact)
  ).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return buckets + np.where(distance < max_exact, distance, large)


class T5LayerNorm(nn.Module):
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],))
    variance = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    return (weight * (x.astype(jnp.float32) * jax.lax.rsqrt(variance + self.eps))).astype(x.dtype)


def _dense(features, name, dtype):
  return nn.Dense(features, use_bias=False, dtype=dtype, name=name)


class T5Block(nn.Module):
  config: T5Config
  has_bias: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, position_bias, mask_bias):
    c = self.config
    b, length, _ = x.shape
    if self.has_bias:
      offsets = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
      buckets = relative_position_bucket(
          offsets, c.relative_attention_num_buckets, c.relative_attention_max_distance
      )
      table = nn.Embed(c.relative_attention_num_buckets, c.num_heads, name="rel_bias")
      position_bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))[None]  # [1, H, Lq, Lk]
    h = T5LayerNorm(c.layer_norm_epsilon, name="attn_norm")(x)
    heads = lambda name: _dense(c.num_heads * c.d_kv, name, self.dtype)(h).reshape(
        b, length, c.num_heads, c.d_kv
    )
    q, k, v = heads("q"), heads("k"), heads("v")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + position_bias + mask_bias
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length, c.num_heads * c.d_kv)
    x = x + _dense(c.d_model, "o", self.dtype)(out)
    h = T5LayerNorm(c.layer_norm_epsilon, name="ff_norm")(x)
    if c.feed_forward_proj == "relu":
      h = nn.relu(_dense(c.d_ff, "wi", self.dtype)(h))
    else:
      act = nn.relu if c.feed_forward_proj == "gated-relu" else lambda y: nn.gelu(y, approximate=True)
      h = act(_dense(c.d_ff, "wi_0", self.dtype)(h)) * _dense(c.d_ff, "wi_1", self.dtype)(h)
    return x + _dense(c.d_model, "wo", self.dtype)(h), position_bias


class T5Encoder(nn.Module):
  """ids int32 [N, L] (PAD = 0 after the </s>) -> (hidden [N, L, d_model], mask [N, L])."""

  config: T5Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    c = self.config
    mask = ids != PAD  # the empty caption is one </s>: never a row of nothing
    x = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype, name="shared")(ids)
    mask_bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
    position_bias = None
    for i in range(c.num_layers):
      x, position_bias = T5Block(c, c.bias_per_layer or i == 0, self.dtype, name=f"block_{i}")(
          x, position_bias, mask_bias
      )
    x = T5LayerNorm(c.layer_norm_epsilon, name="final_norm")(x)
    return jnp.where(mask[..., None], x, 0.0), mask


def hf_key(path):
  """Our parameter path (a tuple of names) -> the Hugging Face encoder checkpoint's key."""
  if path == ("shared", "embedding"):
    return "shared.weight"
  if path == ("final_norm", "weight"):
    return "encoder.final_layer_norm.weight"
  block, layer, leaf = path
  i = block.split("_")[1]
  names = {
      "attn_norm": "layer.0.layer_norm.weight",
      "rel_bias": "layer.0.SelfAttention.relative_attention_bias.weight",
      "ff_norm": "layer.1.layer_norm.weight",
  }
  if layer in names:
    return f"encoder.block.{i}.{names[layer]}"
  if layer in ("q", "k", "v", "o"):
    return f"encoder.block.{i}.layer.0.SelfAttention.{layer}.weight"
  return f"encoder.block.{i}.layer.1.DenseReluDense.{layer}.weight"


def load_t5_params(path, config, dtype=jnp.float32):
  """The encoder's weights from PATH (model.safetensors or a sharded index) as our parameter
  tree, torch Linear [out, in] kernels transposed, each name and shape checked; the decoder's
  weights in the files are not read."""
  from sora_jax.weights import TensorReader, weight_files

  shapes = jax.eval_shape(
      lambda: T5Encoder(config).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))["params"]
  )
  files = weight_files(path, "model")
  if "shared.weight" not in files and "encoder.embed_tokens.weight" in files:  # tied, saved once
    files["shared.weight"] = files["encoder.embed_tokens.weight"]
  reader = TensorReader(files, path)

  def read(key_path, like):
    names = tuple(p.key for p in key_path)
    if names[-1] == "kernel":  # shapes shown as the file holds them, [out, in]
      return reader.read(
          hf_key(names), like.shape, dtype, transform=jnp.transpose, shown_shape=lambda s: tuple(s)[::-1]
      )
    return reader.read(hf_key(names), like.shape, dtype)

  return jax.tree_util.tree_map_with_path(read, shapes)


class T5Tokenizer:
  """Captions -> T5 ids: the pieces, then </s>, truncated to max_len (the </s> kept) and
  PAD-padded, as transformers' T5 tokenizers give with truncation and padding to max_length.
  tokenizer.json (the `tokenizers` library) is used when the folder has it, else spiece.model
  (`sentencepiece`)."""

  def __init__(self, path):
    json_file, sp_file = os.path.join(path, "tokenizer.json"), os.path.join(path, "spiece.model")
    if os.path.isfile(json_file):
      from tokenizers import Tokenizer

      tok = Tokenizer.from_file(json_file)
      tok.no_truncation()
      tok.no_padding()
      # The fast tokenizer's post-processor appends </s> itself.
      self._encode = lambda text: tok.encode(text).ids
    elif os.path.isfile(sp_file):
      import sentencepiece

      sp = sentencepiece.SentencePieceProcessor(model_file=sp_file)
      self._encode = lambda text: sp.encode(text) + [EOS]
    else:
      raise ConfigError(f"model.text.path={path}: no tokenizer.json or spiece.model")

  def __call__(self, captions, max_len):
    out = np.full((len(captions), max_len), PAD, np.int32)
    for i, caption in enumerate(captions):
      ids = self._encode(caption)
      if len(ids) > max_len:
        ids = ids[: max_len - 1] + [EOS]
      out[i, : len(ids)] = ids
    return out


TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")


def write_t5_folder(folder, params, source, dtype, max_shard_bytes=None):
  """The encoder as a Hugging Face T5 encoder folder (what `T5Config.from_folder`,
  `load_t5_params` and transformers' T5EncoderModel read): `source`'s config.json and tokenizer
  files, and model.safetensors of our weights under the checkpoint's names, kernels back in
  torch's [out, in] layout."""
  import shutil

  from sora_jax.weights import DEFAULT_SHARD_BYTES, flatten, write_safetensors

  os.makedirs(folder, exist_ok=True)
  tensors = {}
  for name, value in flatten(params).items():
    path = tuple(name.split("."))
    value = jnp.asarray(value, dtype)
    tensors[hf_key(path)] = value.T if path[-1] == "kernel" else value
  write_safetensors(folder, "model", tensors, max_shard_bytes or DEFAULT_SHARD_BYTES)
  for file in ("config.json",) + TOKENIZER_FILES:
    if os.path.isfile(os.path.join(source, file)):
      shutil.copyfile(os.path.join(source, file), os.path.join(folder, file))

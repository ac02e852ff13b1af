"""Text encoders: caption -> (embeddings [N, Lt, D], mask [N, Lt]).

The embedded default is a small word-level transformer trained jointly with the DiT: words are
hashed into a fixed vocabulary (no tokenizer file, nothing downloaded), position 0 is always a
BOS token so the empty caption used for classifier-free guidance is a valid 1-token sequence.
A frozen pretrained encoder fills the same interface: token ids in, (embeddings, mask) out.
"""
import re
import zlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sora_jax.nn.embeddings import sinusoidal
from sora_jax.nn.layers import Attention, Mlp, layer_norm, named

PAD, BOS, RESERVED = 0, 1, 2


def tokenize(captions, max_len, vocab_size):
  """list[str] -> int32 [N, max_len]: BOS then one hashed id per word, 0-padded, truncated."""
  out = np.zeros((len(captions), max_len), np.int32)
  for i, caption in enumerate(captions):
    words = re.findall(r"[a-z0-9]+|[^\sa-z0-9]", caption.lower())[: max_len - 1]
    ids = [RESERVED + zlib.crc32(w.encode()) % (vocab_size - RESERVED) for w in words]
    out[i, : 1 + len(ids)] = [BOS] + ids
  return out


class HashedWordEncoder(nn.Module):
  """Pre-LN transformer over hashed word ids with bidirectional attention inside a caption."""
  vocab_size: int = 4096
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    mask = ids != PAD
    embed_init = named(nn.linear.default_embed_init, ("vocab", "text_embed"))
    # Scaled by sqrt(width) (as in the original Transformer): word vectors start as large as the
    # sinusoidal positions, so word identity (e.g. "left" vs "right") is visible from the first
    # step instead of a 1/8-size perturbation of position that the DiT learns to ignore.
    x = nn.Embed(self.vocab_size, self.width, embedding_init=embed_init, name="embed")(ids) * np.sqrt(self.width)
    x = x.astype(self.dtype)
    x = x + sinusoidal(jnp.arange(ids.shape[-1]), self.width).astype(self.dtype)
    segment_ids = mask.astype(jnp.int32)  # real tokens attend real tokens of the same caption
    for i in range(self.depth):
      h = layer_norm(f"ln_attn_{i}", dtype=self.dtype)(x)
      x = x + Attention(self.num_heads, dtype=self.dtype, seq_axis="text_length", name=f"attn_{i}")(h, segment_ids)
      h = layer_norm(f"ln_mlp_{i}", dtype=self.dtype)(x)
      x = x + Mlp(4 * self.width, self.width, dtype=self.dtype, name=f"mlp_{i}")(h)
    return layer_norm("ln_out", dtype=self.dtype)(x), mask

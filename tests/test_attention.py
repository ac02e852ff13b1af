"""Every attention implementation that runs on CPU matches the reference on packed rows."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import mesh_config
from sora_jax.nn import attention
from sora_jax.nn.attention import dot_product_attention, ragged_layout
from sora_jax.parallel.mesh import make_mesh
from sora_jax.parallel.sharding import MeshFunction


def packed_ids(rng, rows, length, max_segments):
  """Rows of consecutive segments of random lengths, then padding (0)."""
  ids = np.zeros((rows, length), np.int32)
  for r in range(rows):
    cuts = np.sort(rng.choice(np.arange(1, length - 8), max_segments - 1, replace=False))
    bounds = np.concatenate([[0], cuts, [length - rng.integers(0, 8)]])
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
      ids[r, a:b] = s + 1
  return ids


def inputs(seed, *, rows=2, lq=256, lk=256, heads=2, dim=32, cross=False):
  rng = np.random.default_rng(seed)
  q_ids = packed_ids(rng, rows, lq, 4)
  kv_ids = np.repeat(np.arange(1, 5), lk // 4)[None].repeat(rows, 0) if cross else q_ids
  q, k, v = (rng.normal(size=(rows, n, heads, dim)).astype(np.float32) for n in (lq, lk, lk))
  return q, k, v, q_ids, kv_ids


def loss(implementation, q, k, v, q_ids, kv_ids):
  out = dot_product_attention(q, k, v, q_ids, kv_ids, implementation=implementation)
  real = (q_ids > 0)[..., None, None]
  return jnp.sum(jnp.where(real, out, 0.0) * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_splash_matches_reference_forward_and_gradients(cross):
  q, k, v, q_ids, kv_ids = inputs(0, lk=72 if cross else 256, cross=cross)  # 72: padded to a block
  grad = lambda impl: jax.jit(jax.value_and_grad(lambda *a: loss(impl, *a, q_ids, kv_ids), argnums=(0, 1, 2),
                                                 has_aux=True))(q, k, v)
  (_, want), want_grads = grad("xla")
  (_, got), got_grads = grad("splash_interpret")
  real = q_ids > 0
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=5e-5)


def test_splash_under_a_context_and_tensor_mesh():
  """Per-device kernels (shard_map) with queries split over `context`, heads over `tensor`."""
  mesh = make_mesh(mesh_config(data=2, context=2, tensor=2))
  q, k, v, q_ids, kv_ids = inputs(1, heads=4)
  want = dot_product_attention(q, k, v, q_ids, kv_ids)
  got = MeshFunction(lambda *a: dot_product_attention(*a, implementation="splash_interpret"), mesh)(
      q, k, v, q_ids, kv_ids)
  real = q_ids > 0
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5)


def test_splash_skips_key_blocks_of_other_examples():
  """Example A fills blocks 0-1 and B block 2 (of 128 tokens). With NaN in B's keys and values, A's
  outputs and gradients stay finite and exact only if A's queries never visit B's block."""
  q, k, v, _, _ = inputs(2, rows=1, lq=384, lk=384)
  ids = np.repeat(np.array([[1, 1, 2]], np.int32), 128, axis=1)
  k[:, 256:], v[:, 256:] = np.nan, np.nan
  a = slice(0, 256)
  f = lambda q, k, v: dot_product_attention(q, k, v, ids, ids, implementation="splash_interpret")
  out, vjp = jax.vjp(f, q, k, v)
  want = dot_product_attention(q[:, a], k[:, a], v[:, a], ids[:, a], ids[:, a])
  np.testing.assert_allclose(np.asarray(out)[:, a], want, atol=2e-5)
  grads = vjp(jnp.zeros_like(out).at[:, a].set(1.0))
  assert all(np.isfinite(np.asarray(g)[:, a]).all() for g in grads)


def test_splash_query_blocks_with_no_key_block_stay_finite():
  """A block of padding queries (id 0) against keys with no id 0 (every caption slot full)
  matches no key block; it must still give the reference's finite output, not 0 / 0."""
  q, k, v, _, _ = inputs(3, rows=1, lq=384, lk=128)  # 384: blocks of 128
  q_ids = np.repeat(np.array([[1, 0, 0]], np.int32), 128, axis=1)
  kv_ids = np.ones((1, 128), np.int32)
  got = dot_product_attention(q, k, v, q_ids, kv_ids, implementation="splash_interpret")
  np.testing.assert_allclose(got, dot_product_attention(q, k, v, q_ids, kv_ids), atol=2e-5)


def all_rows_loss(fn, q, k, v, q_ids, kv_ids):
  """Weights every output, padding and fully masked queries included."""
  out = fn(q, k, v, q_ids, kv_ids)
  return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_blockwise_matches_dense_forward_and_gradients(cross):
  """Blocks of 16 over 100 queries and 100 (or 40) keys: both lengths padded to a block. Cross:
  padding queries (id 0) match no caption key, and get the dense path's uniform average."""
  q, k, v, q_ids, kv_ids = inputs(4, lq=100, lk=40 if cross else 100, cross=cross)
  grad = lambda fn: jax.jit(jax.value_and_grad(lambda *a: all_rows_loss(fn, *a, q_ids, kv_ids),
                                               argnums=(0, 1, 2), has_aux=True))(q, k, v)
  (_, want), want_grads = grad(attention._dense_attention)
  (_, got), got_grads = grad(lambda *a: attention._blockwise_attention(*a, block=16))
  np.testing.assert_allclose(got, want, atol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-5)


def largest_value(jaxpr):
  """Element count of the largest array in a jaxpr, nested ones (scan, checkpoint) included."""
  shapes = re.findall(r"(?:f32|bf16|i32|bool)\[([\d,]+)\]", str(jaxpr))
  return max(np.prod([int(n) for n in shape.split(",")]) for shape in shapes)


def test_long_rows_take_the_blockwise_path(monkeypatch):
  """Past DENSE_MAX_LOGITS no [Lq, Lk] array exists, forward or backward, and the answer is the
  dense one, also per device under a context and tensor mesh."""
  monkeypatch.setattr(attention, "DENSE_MAX_LOGITS", 0)
  monkeypatch.setattr(attention, "XLA_BLOCK", 32)
  q, k, v, q_ids, kv_ids = inputs(5, lq=200, lk=200, heads=4, dim=8)  # dim 8: q, k, v < one [Lq, Lk]
  f = lambda q, k, v: dot_product_attention(q, k, v, q_ids, kv_ids)
  grad = jax.grad(lambda *a: all_rows_loss(lambda *b: dot_product_attention(*b), *a, q_ids, kv_ids)[0],
                  argnums=(0, 1, 2))
  assert largest_value(jax.make_jaxpr(grad)(q, k, v)) < 200 * 200
  want = attention._dense_attention(q, k, v, q_ids, kv_ids)
  np.testing.assert_allclose(jax.jit(f)(q, k, v), want, atol=1e-5)
  mesh = make_mesh(mesh_config(data=2, context=2, tensor=2))
  np.testing.assert_allclose(MeshFunction(f, mesh)(q, k, v), want, atol=1e-5)


def test_ragged_layout_of_packed_rows_and_captions():
  ids = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]], jnp.int32)
  (offsets, lengths), (kv_offsets, kv_lengths) = ragged_layout(ids, ids, 4)
  assert offsets.tolist() == kv_offsets.tolist() == [[0, 3, 5, -1, -1], [0, -1, -1, -1, -1]]
  assert lengths.tolist() == kv_lengths.tolist() == [[3, 2, 1, -1], [7, -1, -1, -1]]
  # Captions at slot * Lt (Lt = 2); slot 3 holds only a null caption (as sampling gives unused
  # slots) and no video tokens: it is left out on both sides, so segments pair up by order.
  video = jnp.asarray([[1, 1, 2, 0]], jnp.int32)
  captions = jnp.asarray([[1, 0, 2, 2, 3, 0]], jnp.int32)
  (offsets, lengths), (kv_offsets, kv_lengths) = ragged_layout(video, captions, 3)
  assert offsets.tolist() == [[0, 2, -1, -1]] and lengths.tolist() == [[2, 1, -1]]
  assert kv_offsets.tolist() == [[0, 2, -1, -1]] and kv_lengths.tolist() == [[1, 2, -1]]


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs an NVIDIA GPU")
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_cudnn_matches_reference_forward_and_gradients(cross):
  q, k, v, q_ids, kv_ids = inputs(0, lk=72 if cross else 256, cross=cross)
  q, k, v = (jnp.asarray(a, jnp.bfloat16) for a in (q, k, v))

  def run(implementation):
    def f(q, k, v):
      out = dot_product_attention(q, k, v, q_ids, kv_ids, implementation=implementation, max_segments=4)
      out = jnp.where((q_ids > 0)[..., None, None], out, 0).astype(jnp.float32)
      return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

  (_, want), want_grads = run("xla")
  (_, got), got_grads = run("cudnn")
  np.testing.assert_allclose(got, want, atol=2e-2)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=5e-2)

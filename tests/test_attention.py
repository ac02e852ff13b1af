"""Every attention implementation that runs on CPU matches the reference on packed rows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import mesh_config
from sora_jax.nn.attention import dot_product_attention
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

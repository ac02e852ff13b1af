"""Sharded train states, packed global batches and jitted functions on a mesh."""

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from sora_jax.parallel.rules import logical_sharding, sharding_context

# Logical axes of the packed batch (ARCHITECTURE.md): token-level arrays are [B, L, ...],
# per-example arrays [B, E, ...].
TOKEN_KEYS = ("tokens", "segment_ids", "positions", "loss_mask", "cond_mask")


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(batch, mesh):
  """{key: array or shape struct} -> {key: NamedSharding}: rows over data x fsdp, tokens over context."""

  def spec(key, x):
    rest = (None,) * (x.ndim - 2)
    return ("batch", "length") + rest if key in TOKEN_KEYS else ("batch",) + (None,) * (x.ndim - 1)

  return {k: logical_sharding(P(*spec(k, v)), mesh) for k, v in batch.items()}


def global_batch(local_batch, shardings, global_rows):
  """This host's rows (numpy) -> global jax arrays laid out as `shardings`."""
  return {
      k: jax.make_array_from_process_local_data(shardings[k], v, (global_rows,) + v.shape[1:])
      for k, v in local_batch.items()
  }


def abstract_sharded(init_fn, rng, mesh):
  """Shapes of `init_fn(rng)` (a tree holding logically named params) without computing it:
  (tree of ShapeDtypeStructs carrying their shardings, tree of shardings)."""
  abstract = jax.eval_shape(init_fn, rng)
  shardings = logical_sharding(nn.get_partition_spec(abstract), mesh)
  shapes = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.meta.unbox(abstract), shardings
  )
  return shapes, shardings


def init_sharded(init_fn, rng, mesh):
  """Run `init_fn(rng)` (a tree holding logically named params) straight into its shardings.

  No device ever holds the full tree: the shardings come from the abstract (eval_shape) tree,
  and the jitted init writes every shard where it lives. Returns (plain arrays tree, shardings).
  """
  _, shardings = abstract_sharded(init_fn, rng, mesh)
  with sharding_context(mesh):
    tree = jax.jit(lambda r: nn.meta.unbox(init_fn(r)), out_shardings=shardings)(rng)
  return tree, shardings


class MeshFunction:
  """jax.jit(fn) whose tracing, calls and lowering happen under the mesh and logical rules."""

  def __init__(self, fn, mesh, **jit_kwargs):
    self.mesh = mesh
    self.jitted = jax.jit(fn, **jit_kwargs)

  def __call__(self, *args):
    with sharding_context(self.mesh):
      return self.jitted(*args)

  def lower(self, *args):
    with sharding_context(self.mesh):
      return self.jitted.lower(*args)


def sharded_train_step(train_step, mesh, state_sharding, batch_shardings, frozen_shardings=()):
  """train_step(state, batch, rng, *frozen) -> (state, metrics), jitted with the state donated;
  frozen_shardings: one per frozen argument (a fine-tune's base weights)."""
  rep = replicated(mesh)
  return MeshFunction(
      train_step,
      mesh,
      in_shardings=(state_sharding, batch_shardings, rep, *frozen_shardings),
      out_shardings=(state_sharding, rep),
      donate_argnums=0,
  )

"""The one table that maps logical axis names (on parameters and activations) to mesh axes.

Model code names axes by meaning ("embed", "heads", "length"); only this table knows the mesh.
Parameters are FSDP-sharded on their embedding axis (over `fsdp` and `context`), heads and MLP width go over `tensor`, the
token axis of activations over `context`, and the batch over `data` x `fsdp` (ZeRO-3 style:
FSDP ranks hold different examples and gather each weight when a layer needs it).
"""
import contextlib

import flax.linen as nn
import jax

MESH_AXES = ("data", "fsdp", "context", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES = (
    # activations
    ("batch", BATCH_AXES),
    ("length", "context"),        # query tokens: sequence / context parallel
    ("kv_length", None),          # keys and values are gathered over `context`
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("example", None),            # per-example slots [B, E, ...]
    ("text_length", None),
    # parameters
    ("embed", ("fsdp", "context")),  # context ranks hold different tokens: they shard weights too
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("vocab", None),
    ("norm", None),
    ("patch", None),
    ("modulation", None),
    ("text_embed", None),
    ("layers", None),              # the stacked axis of scanned blocks
)


@contextlib.contextmanager
def sharding_context(mesh):
  """Trace model code with `mesh` and the rules: activation constraints become real."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    yield


def logical_sharding(logical_specs, mesh):
  """A tree of logical PartitionSpecs -> the same tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_RULES)

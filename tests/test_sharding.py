"""Every mesh layout computes what one device computes, on packed mixed-resolution rows."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.shapes import get_config
from helpers import packed, random_example
from sora_jax.config import ConfigError, mesh_config
from sora_jax.data.packing import unpack
from sora_jax.models.build import patch_dim
from sora_jax.parallel.mesh import check_divisibility, make_mesh, mesh_shape
from sora_jax.parallel.rules import logical_sharding
from sora_jax.parallel.sharding import MeshFunction, batch_sharding, init_sharded, replicated
from sora_jax.train.dit_stage import dit_training

LAYOUTS = {
    "data": dict(data=8),
    "fsdp": dict(data=1, fsdp=8),
    "tensor": dict(data=4, tensor=2),
    "context": dict(data=2, context=4),
    "mixed": dict(data=1, fsdp=2, context=2, tensor=2),
    "mixed_splash": dict(data=1, fsdp=2, context=2, tensor=2),  # + the splash kernel per device
    "mixed_scan": dict(data=1, fsdp=2, context=2, tensor=2),    # + nn.scan over blocks, remat
}


def to_scanned(params, depth, group):
  """Unscanned block_i params -> the stacked `blocks/block_j` layout of scan_layers=True."""
  out = {k: v for k, v in params.items() if not k.startswith("block_")}
  out["blocks"] = {f"block_{j}": jax.tree.map(lambda *xs: jnp.stack(xs),
                                              *[params[f"block_{i}"] for i in range(j, depth, group)])
                   for j in range(group)}
  return out
GRIDS = [(1, 2, 2), (2, 2, 4), (3, 2, 2), (2, 4, 2), (1, 4, 4), (3, 2, 4), (2, 2, 2), (1, 2, 4)]


def tiny_config(attention_impl="xla", **mesh):
  c = get_config("tiny")
  c.model.attention_impl = attention_impl
  c.mesh = mesh_config(**mesh)
  c.model.num_heads = 4
  c.model.text.num_heads = 2
  return c


@pytest.fixture(scope="module")
def setup():
  """One-device reference: params, a packed batch of mixed-size examples, loss and grads."""
  config = tiny_config(data=1)
  training = dit_training(config)
  rng = np.random.default_rng(0)
  examples = [random_example(rng, g) for g in GRIDS * 3]
  for e in examples:  # the tiny config's patch size and text length
    e["tokens"] = rng.normal(size=(len(e["tokens"]), patch_dim(config))).astype(np.float32)
    e["text_ids"] = np.pad(e["text_ids"], (0, config.model.text.max_len - len(e["text_ids"])))
  t = config.train
  batch, places = packed(examples, rows=t.rows, row_length=t.row_length, max_per_row=t.max_per_row)
  assert sum(p is not None for p in places) >= 16 and len({e["tokens"].shape for e in examples}) > 4
  params = nn.meta.unbox(jax.jit(training.init_state)(jax.random.key(0)).params)
  # Move off the adaLN-Zero init, where most gradients are exactly zero and compare trivially.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = tree.unflatten([x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  rng_loss = jax.random.key(1)
  loss, grads = jax.jit(jax.value_and_grad(lambda p: training.loss_fn(p, batch, rng_loss)[0]))(params)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
  return dict(batch=batch, places=places, examples=examples, params=params, loss=loss,
              grads=grads, rng=rng_loss)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_matches_one_device(setup, layout):
  config = tiny_config("splash_interpret" if "splash" in layout else "xla", **LAYOUTS[layout])
  scan = layout.endswith("scan")
  if scan:
    config.model.scan_layers, config.model.remat = True, "full"
  convert = (lambda p: to_scanned(p, config.model.depth, len(config.model.attention_patterns))) if scan else (lambda p: p)
  mesh = make_mesh(config.mesh)
  check_divisibility(config, mesh)
  training = dit_training(config)
  state, state_sharding = init_sharded(training.init_state, jax.random.key(0), mesh)
  if scan:
    assert state.params["blocks"]["block_0"]["mlp"]["fc1"]["kernel"].shape[0] == 1  # stacked groups
  if layout == "fsdp":  # the state is created already sharded: no device holds a full weight
    kernel = state.params["block_0"]["mlp"]["fc1"]["kernel"]
    assert kernel.addressable_shards[0].data.shape[0] == kernel.shape[0] // 8
  params = jax.device_put(convert(setup["params"]), state_sharding.params)
  shardings = batch_sharding(setup["batch"], mesh)
  batch = jax.device_put(setup["batch"], shardings)

  grad_fn = MeshFunction(jax.value_and_grad(lambda p, b, r: training.loss_fn(p, b, r)[0]), mesh,
                         in_shardings=(state_sharding.params, shardings, replicated(mesh)),
                         out_shardings=(replicated(mesh), state_sharding.params))
  loss, grads = grad_fn(params, batch, setup["rng"])
  np.testing.assert_allclose(loss, setup["loss"], rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(convert(setup["grads"]))):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)

  # The packed row's per-example outputs equal each example run alone.
  t = jnp.linspace(0.1, 0.9, batch["grid"].shape[0] * batch["grid"].shape[1]).reshape(batch["grid"].shape[:2])
  apply = MeshFunction(lambda p, b, t: training.model.apply(
      {"params": p}, b["tokens"], b["segment_ids"], b["positions"], b["cond_mask"], t, b["text_ids"]), mesh)
  out = np.asarray(apply(params, batch, jax.device_put(t, logical_sharding(P("batch"), mesh))))
  for i, (ex, place, got) in enumerate(zip(setup["examples"], setup["places"], unpack(out, setup["examples"], setup["places"]))):
    if place is None or i % 3:
      continue
    alone, _ = packed([ex], rows=1, row_length=config.train.row_length, max_per_row=config.train.max_per_row)
    t_alone = np.full((1, config.train.max_per_row), t[place[0], place[1]], np.float32)
    want = training.model.apply({"params": convert(setup["params"])}, alone["tokens"], alone["segment_ids"],
                                alone["positions"], alone["cond_mask"], t_alone, alone["text_ids"])
    np.testing.assert_allclose(got, np.asarray(want)[0, :len(got)], rtol=1e-4, atol=1e-5)


def test_mesh_shape_fills_and_rejects():
  assert mesh_shape(dict(data=-1, fsdp=2, context=1, tensor=2), 8) == (2, 2, 1, 2)
  with pytest.raises(ConfigError, match="not divisible by the fixed axes"):
    mesh_shape(dict(data=-1, fsdp=3, context=1, tensor=1), 8)
  with pytest.raises(ConfigError, match="make 4 devices, but there are 8"):
    mesh_shape(dict(data=2, fsdp=2, context=1, tensor=1), 8)
  with pytest.raises(ConfigError, match="at most one axis may be -1"):
    mesh_shape(dict(data=-1, fsdp=-1, context=1, tensor=1), 8)


@pytest.mark.parametrize("mesh, change, message", [
    (dict(data=2, tensor=4), {}, "model.text.num_heads=2 is not divisible by mesh.tensor=4"),
    (dict(data=1, context=8), {"row_length": 36}, "train.row_length=36 is not divisible by mesh.context=8"),
    (dict(data=8), {"rows": 4}, "train.rows=4 is not divisible by data x fsdp=8"),
])
def test_divisibility_errors_name_the_key(mesh, change, message):
  config = tiny_config(**mesh)
  config.train.update(change)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    check_divisibility(config, make_mesh(config.mesh))


def test_checkpoint_restores_onto_another_mesh(setup, tmp_path):
  """Saved under one layout, restored into another: orbax reshards to the target's shardings."""
  from sora_jax.train.checkpoint import Checkpointer
  saved_config, other_config = tiny_config(**LAYOUTS["data"]), tiny_config(**LAYOUTS["mixed"])
  training = dit_training(saved_config)
  state, _ = init_sharded(training.init_state, jax.random.key(0), make_mesh(saved_config.mesh))
  ckpt = Checkpointer(tmp_path / "ckpt")
  ckpt.save(1, state)
  ckpt.close()
  target, target_sharding = init_sharded(dit_training(other_config).init_state, jax.random.key(5),
                                         make_mesh(other_config.mesh))
  ckpt = Checkpointer(tmp_path / "ckpt")
  restored = ckpt.restore(target)
  ckpt.close()
  kernel = restored.params["block_0"]["mlp"]["fc1"]["kernel"]
  assert kernel.sharding == target_sharding.params["block_0"]["mlp"]["fc1"]["kernel"]
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(got, want)

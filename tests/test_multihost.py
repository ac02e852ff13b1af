"""Two processes on localhost (jax.distributed, gloo CPU collectives) train the DiT stage and
reach the parameters of one process fed the same global batches."""
import os
import pickle
import socket
import subprocess
import sys

import jax
import numpy as np

from helpers import fake_latent_cache
from multihost_config import config
from sora_jax.parallel.mesh import make_mesh
from sora_jax.parallel.sharding import batch_sharding, global_batch, init_sharded, sharded_train_step
from sora_jax.train.checkpoint import Checkpointer
from sora_jax.train.dit_stage import CACHE_FILE, dit_batches, dit_training, shapes_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  c = config()
  cache = fake_latent_cache(c)
  with open(tmp_path / CACHE_FILE, "wb") as f:
    pickle.dump(cache, f)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
  port = free_port()
  workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py"), str(port),
                               str(i), str(tmp_path)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
  for w in workers:
    out, _ = w.communicate(timeout=600)
    assert w.returncode == 0, out[-3000:]

  # One process, 4 devices, fed the same global batches: each host's shard, concatenated.
  mesh = make_mesh(c.mesh, devices=jax.devices()[:4])
  training = dit_training(c)
  state, state_sharding = init_sharded(training.init_state, jax.random.key(c.seed), mesh)
  shardings = batch_sharding(training.batch_shapes, mesh)
  step_fn = sharded_train_step(training.train_step, mesh, state_sharding, shardings)
  key = jax.random.key(c.seed + 1)
  streams = [dit_batches(c, shapes_data(c, cache), i, 2) for i in range(2)]
  for step in range(c.train.steps):
    shards = [next(s)[0] for s in streams]
    local = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    state, _ = step_fn(state, global_batch(local, shardings, c.train.rows), jax.random.fold_in(key, step))

  ckpt = Checkpointer(os.path.join(tmp_path, "checkpoints", "dit"))
  assert ckpt.latest_step() == c.train.steps
  saved = ckpt.restore_saved()
  ckpt.close()
  flat_saved = jax.tree_util.tree_leaves_with_path(saved["params"])
  flat_ref = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)))
  assert len(flat_saved) == len(flat_ref) > 10
  for path, value in flat_saved:
    np.testing.assert_allclose(value, flat_ref[path], rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))

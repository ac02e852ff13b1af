"""The fixed-noise validation loss does not depend on batch size, packing, row length or mesh."""
import jax
import numpy as np
import pytest

from configs.shapes import get_config
from helpers import tiny_pipeline
from sora_jax.parallel.mesh import make_mesh
from sora_jax.parallel.sharding import MeshFunction, batch_sharding, global_batch
from sora_jax.train.dit_stage import dit_training
from sora_jax.train.validation import validation_loss, validation_set


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  pipe = tiny_pipeline()
  config = get_config("tiny")
  config.validation.train_sample = 6
  examples = validation_set(config, str(tmp_path_factory.mktemp("run")), pipe.vae, pipe.vae_params)
  return config, pipe, examples


def _report(config, pipe, examples, *, rows, row_length, max_per_row, mesh=None):
  c = config.copy_and_resolve_references()
  c.train.rows, c.train.row_length, c.train.max_per_row = rows, row_length, max_per_row
  training = dit_training(c)
  if mesh is None:
    return validation_loss(c, jax.jit(training.denoise), pipe.dit_params, examples, pipe.latent_stats)
  shardings = batch_sharding(training.batch_shapes, mesh)
  put = lambda batch: global_batch(batch, shardings, rows)
  return validation_loss(c, MeshFunction(training.denoise, mesh), pipe.dit_params, examples, pipe.latent_stats,
                         put_batch=put)


def test_validation_set_holds_held_out_and_training_kind_examples(setup):
  config, _, examples = setup
  assert len(examples) == 16 + 6  # the held-out prompts, then the training-distribution sample
  s = config.sample
  assert all(e["bucket"] == (s.num_frames, s.height, s.width) for e in examples[:16])
  assert {e["bucket"][0] for e in examples[16:]} <= set(config.data.frames)


def test_loss_is_the_same_whatever_the_packing_batch_or_mesh(setup):
  config, pipe, examples = setup
  base = _report(config, pipe, examples, rows=2, row_length=32, max_per_row=4)
  per_example = np.asarray(base["per_example"])
  assert per_example.shape == (len(examples), len(config.validation.times)) and (per_example > 0).all()
  assert base["mean"] == pytest.approx(per_example.mean())
  variants = [
      dict(rows=8, row_length=64, max_per_row=16),  # more rows, longer rows, more examples per row
      dict(rows=1, row_length=8, max_per_row=1),  # one example per row
      dict(rows=8, row_length=32, max_per_row=8, mesh=make_mesh(config.mesh)),  # 8 devices
  ]
  for kw in variants:
    other = np.asarray(_report(config, pipe, examples, **kw)["per_example"])
    np.testing.assert_allclose(other, per_example, rtol=1e-6, atol=1e-9)
  again = _report(config, pipe, examples, rows=2, row_length=32, max_per_row=4)
  assert again["per_example"] == base["per_example"]  # the noise is fixed


def test_loss_reports_times_buckets_and_standard_errors(setup):
  config, pipe, examples = setup
  report = _report(config, pipe, examples, rows=2, row_length=32, max_per_row=4)
  assert report["times"] == list(config.validation.times)
  assert len(report["per_time"]) == len(report["per_time_standard_error"]) == len(config.validation.times)
  assert sum(b["examples"] for b in report["buckets"].values()) == len(examples)
  assert report["standard_error"] > 0

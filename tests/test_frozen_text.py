"""A frozen pretrained T5 beside the DiT (model.text.kind = t5): training keeps it out of the
train state and checkpoints, export writes it as a Hugging Face encoder folder, serving exports
its encoder, and cache-latents stores caption embeddings that train to the same loss."""
import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from sora_jax.cli import run

ROOT = Path(__file__).resolve().parents[1]
T5_TINY = ROOT / "tests" / "data" / "t5" / "t5_tiny"
TINY_T5 = [
    f"--config={ROOT / 'configs' / 'shapes.py'}:tiny",
    "--config.model.text.kind=t5",
    f"--config.model.text.path={T5_TINY}",
]


def call(*argv):
  run(["sora-jax", *argv])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("t5") / "run"
  call("train", *TINY_T5, f"--workdir={run_dir}", "--config.sample.eval_modes=none")
  return run_dir


@pytest.fixture(scope="module")
def latents(workdir, tmp_path_factory):
  """Shapes clips with captions from the 'captioner' of tests/helpers.py, cached with their embeddings."""
  folder = tmp_path_factory.mktemp("t5data")
  call("prepare", "--input=shapes:3", f"--output={folder / 'clips'}", "--clip_frames=5", "--clip_stride=9",
       "--captioner=helpers:describe_frames")
  call("cache-latents", f"--workdir={workdir}", f"--input={folder / 'clips'}", f"--output={folder / 'latents'}")
  return folder / "latents"


def _run_config(workdir, **changes):
  from sora_jax.generate import run_config
  config = run_config(str(workdir))
  config.update_from_flattened_dict(changes)
  return config


def test_encoder_is_not_trained_or_checkpointed(workdir):
  from sora_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(str(workdir / "checkpoints" / "dit"))
  saved = ckpt.restore_saved(None)
  ckpt.close()
  names = {".".join(str(p.key) for p in path) for path, _ in jax.tree_util.tree_flatten_with_path(saved["params"])[0]}
  assert "text_proj.kernel" in names and not any(n.startswith("text_encoder") for n in names)
  assert json.loads((workdir / "config.json").read_text())["model"]["text"]["path"] == str(T5_TINY)


def test_export_writes_a_t5_folder_and_samples_alike(workdir, tmp_path):
  from sora_jax.export import export_run
  from sora_jax.generate import Pipeline, Request, _noise_key, request_noise
  from sora_jax.models.t5 import T5Config
  from sora_jax.serving import Served
  out = tmp_path / "export"
  export_run(str(workdir), str(out), serving=True)
  index = json.loads((out / "model_index.json").read_text())
  assert index["text_encoder"] == ["sora_jax", "T5EncoderModel"]
  source, written = load_file(T5_TINY / "model.safetensors"), load_file(out / "text_encoder" / "model.safetensors")
  assert set(written) == set(source) and all(np.array_equal(written[k], source[k]) for k in source)
  assert T5Config.from_folder(str(out / "text_encoder")) == T5Config.from_folder(str(T5_TINY))
  live, back = Pipeline.load(str(workdir)), Pipeline.load(str(out))
  s = live.config.sample
  request = Request("a red circle moves left", s.num_frames, s.height, s.width, seed=5)
  a = live.sample([request], steps=s.steps, guidance=s.guidance, seed=0)[0]
  assert np.array_equal(a, back.sample([request], steps=s.steps, guidance=s.guidance, seed=0)[0])
  key, i = _noise_key(0, 0, 5)
  shape = live._latent_shape(request)
  noise, first = request_noise(key, i, shape)[None], request_noise(jax.random.fold_in(key, 2**31 - 1), i, shape)[None]
  assert (out / "serving" / "text_encode.jax").is_file()
  served = Served(str(out)).sample([request.prompt], noise, first)[0]
  assert np.abs(served.astype(int) - a.astype(int)).max() <= 2


def test_cached_embeddings_train_to_the_same_loss(workdir, latents):
  from sora_jax.models.build import with_text_embeds
  from sora_jax.train.dit_stage import dit_batches, dit_training, training_latents
  assert (latents / "text_encoder.json").is_file() and (latents / "null_text.npz").is_file()
  config = _run_config(workdir, **{"data.latents": str(latents), "data.generated_caption_share": 0.5,
                                   "data.caption_dropout": 0.3})
  data = training_latents(config, str(workdir), None, None)
  batch, _ = next(dit_batches(config, data))
  assert batch["text_embeds"].dtype == jax.numpy.bfloat16 and batch["text_embeds"].any()
  training = dit_training(config)
  params = nn.meta.unbox(training.init_state(jax.random.key(0)).params)
  # Random weights everywhere (the zero-initialised readout would hide the text): the loss depends on it.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  cached = {k: jax.numpy.asarray(v) for k, v in batch.items()}
  computed = with_text_embeds(config, {k: v for k, v in cached.items() if k != "text_embeds"})
  rng = jax.random.key(2)
  loss_cached, loss_computed = (float(training.loss_fn(params, b, rng)[0]) for b in (cached, computed))
  assert loss_cached == pytest.approx(loss_computed, rel=1e-6)
  zeroed = {**cached, "text_embeds": jax.numpy.zeros_like(cached["text_embeds"])}
  assert float(training.loss_fn(params, zeroed, rng)[0]) != pytest.approx(loss_cached, rel=1e-4)


def test_generated_captions_are_cached_and_drawn_by_share(workdir, latents):
  from sora_jax.data.latent_cache import cached_latents
  from sora_jax.models.frozen_text import identity
  config = _run_config(workdir)
  records = cached_latents(str(latents), 0.5, identity(config.model.text))
  captions = records.read(0)["captions"]
  assert len(captions) == 2 and captions[1].startswith("frames:")
  rng = np.random.default_rng(0)
  drawn = [records.caption_at(0, rng) for _ in range(400)]
  assert 0.4 < drawn.count(captions[1]) / 400 < 0.6
  ids, embeds = records.cached_text(0, captions[1])
  assert embeds.shape == (config.model.text.max_len, 32) and ids[0] != 0
  # A run with another encoder setting (prompt length) does not read these embeddings.
  other = config.model.text.copy_and_resolve_references()
  other.max_len = 8
  assert cached_latents(str(latents), 0.0, identity(other)).null is None


def test_training_from_cached_embeddings_runs(workdir, latents, tmp_path):
  call("train", *TINY_T5, f"--workdir={tmp_path / 'cached'}", f"--config.data.latents={latents}",
       "--config.train.steps=2", "--config.sample.eval_modes=none", "--config.sample.steps=1")
  assert (tmp_path / "cached" / "checkpoints" / "dit").is_dir()


def test_t5_kind_needs_a_folder(tmp_path, capsys):
  with pytest.raises(SystemExit):
    call("train", f"--config={ROOT / 'configs' / 'shapes.py'}:t5", f"--workdir={tmp_path / 'x'}")
  assert "model.text.kind=t5 needs model.text.path" in capsys.readouterr().err
  (tmp_path / "bert").mkdir()
  (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(SystemExit):
    call("train", *TINY_T5[:2], f"--config.model.text.path={tmp_path / 'bert'}", f"--workdir={tmp_path / 'y'}")
  assert "model_type='bert' is not a T5 encoder" in capsys.readouterr().err

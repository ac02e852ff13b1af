"""The VAE trained on real footage (configs/video_vae.py) and `sora-jax eval-vae`: SSIM as
scikit-image computes it, the discriminator held out of the VAE's gradient and the
reconstruction out of the discriminator's, a tiny run end to end, and streamed reconstruction
equal to the chunked encode / decode."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.video_vae import get_config
from sora_jax.cli import run
from sora_jax.evaluation.pixels import psnr, ssim
from test_real_clip import CLIP


def test_ssim_and_psnr_match_scikit_image():
  """Reference values from skimage.metrics (0.26: structural_similarity with gaussian_weights,
  sigma 1.5, use_sample_covariance=False, data_range 1; peak_signal_noise_ratio) on this input."""
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (24, 40, 3)).astype(np.float64)
  a = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1)) / 3
  b = np.clip(a + rng.integers(-40, 41, a.shape), 0, 255)
  a, b = jnp.asarray(a / 127.5 - 1), jnp.asarray(b / 127.5 - 1)
  assert float(ssim(a[None], b[None])[0]) == pytest.approx(0.8426050334584353, abs=1e-6)
  assert float(psnr(a, b)) == pytest.approx(20.681024648613885, abs=1e-4)
  assert float(ssim(a[None], a[None])[0]) == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
  root = tmp_path_factory.mktemp("footage")
  (root / "videos").mkdir()
  for name in ("a", "b"):
    shutil.copy(CLIP, root / "videos" / f"{name}.mp4")
    (root / "videos" / f"{name}.txt").write_text("a street")
  run(["sora-jax", "prepare", f"--input={root / 'videos'}", f"--output={root / 'clips'}", "--clip_frames=9",
       "--max_size=64", "--validation_fraction=0.5"])
  return root


def test_gradients_reach_each_network_only_through_its_own_loss(footage):
  from sora_jax.data.prepare import clip_source
  from sora_jax.models.build import build_vae
  from sora_jax.models.discriminator import PatchDiscriminator3D
  from sora_jax.train.video_vae_stage import footage_batch, footage_loss

  config = get_config("tiny")
  config.vae_train.clips = str(footage / "clips")
  vae = build_vae(config.vae)
  disc = PatchDiscriminator3D(config.vae_train.disc_channels, config.vae_train.disc_layers)
  batch = footage_batch(config, clip_source(config.vae_train.clips), 0)
  assert batch["video"].shape == (8, 5, 16, 16, 3) and not batch["gan"].any()  # step 0: warm-up
  video = jnp.asarray(batch["video"])
  params = {"vae": vae.init(jax.random.key(0), video)["params"], "disc": disc.init(jax.random.key(1), video)["params"]}
  loss_fn = footage_loss(vae, disc, config)
  rng = jax.random.key(2)
  warm = jax.grad(lambda p: loss_fn(p, batch, rng)[0])(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(warm["disc"]))  # no GAN yet
  on = dict(batch, gan=np.ones_like(batch["gan"]))
  grads = jax.grad(lambda p: loss_fn(p, on, rng)[0])(params)
  # The discriminator's gradient is its hinge loss's alone; the VAE's is the generator side's.
  hinge = lambda d: loss_fn({"vae": params["vae"], "disc": d}, on, rng)[1]["discriminator"]
  for got, want in zip(jax.tree.leaves(grads["disc"]), jax.tree.leaves(jax.grad(hinge)(params["disc"]))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
  _, metrics = loss_fn(params, on, rng)
  assert float(metrics["adaptive_weight"]) > 0 and np.isfinite(float(metrics["loss"]))


def test_tiny_footage_run_then_eval_vae(footage, tmp_path, capsys):
  workdir = tmp_path / "run"
  run(["sora-jax", "train", "--vae_only", "--config=configs/video_vae.py:tiny",
       f"--config.vae_train.clips={footage / 'clips'}", f"--workdir={workdir}"])
  run(["sora-jax", "eval-vae", f"--workdir={workdir}", f"--input={footage / 'clips'}", f"--output={tmp_path / 'ev'}"])
  line = capsys.readouterr().out.strip().splitlines()[-1]
  report = json.loads((tmp_path / "ev" / "eval_vae.json").read_text())
  assert report["split"] == "validation" and report["videos"] >= 1 and report["frames"] == 9 * report["videos"]
  assert len(report["psnr_by_frame"]) == 9 and 0 < report["ssim"] <= 1 and f"PSNR {report['psnr']:.2f} dB" in line
  from sora_jax.data.video_io import read_video

  picture = read_video(tmp_path / "ev" / "compare.png")[0]
  # 294 x 240 capped to 64 x 52, cropped to 64 x 48: original / reconstruction / error rows, 4 frames
  assert picture.shape == (3 * 48, 4 * 64, 3)


def test_streamed_reconstruction_equals_chunked_encode_decode(tmp_path):
  """eval-vae streams a long video through the VAE a chunk at a time; the frames it scores are
  those encode_chunked + decode_chunked give on the whole video (13 frames: 1 + 8 + a padded 4)."""
  from configs.shapes import get_config as shapes_config
  from sora_jax.data.transforms import to_model_range, to_uint8
  from sora_jax.evaluation.vae_eval import reconstruct
  from sora_jax.models.build import build_vae
  from sora_jax.models.vae import decode_chunked, encode_chunked

  vae = build_vae(shapes_config("tiny").vae)
  frames = np.random.default_rng(0).integers(0, 256, (15, 20, 36, 3), np.uint8)  # cropped to 16 x 32
  params = vae.init(jax.random.key(0), jnp.zeros((1, 5, 16, 32, 3)))["params"]
  pieces = list(reconstruct(vae, params, iter(frames), chunk_latents=2))
  original, recon = (np.concatenate(v) for v in zip(*pieces))
  assert original.shape == (13, 16, 32, 3) and np.array_equal(original, frames[:13, 2:18, 2:34])
  mean, _ = encode_chunked(vae, params, jnp.asarray(to_model_range(original))[None], chunk_latents=2)
  whole = to_uint8(np.asarray(decode_chunked(vae, params, mean, chunk_latents=2)[0]))
  assert np.abs(recon.astype(int) - whole).max() <= 1

import dataclasses

import jax
import numpy as np
import pytest

from sora_jax.config import ConfigError
from sora_jax.models.build import caption_ids

from helpers import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
  return tiny_pipeline()


def test_sampling_is_reproducible_by_seed_and_independent_of_packing(pipe):
  args = dict(num_frames=5, height=16, width=32, steps=2, guidance=3.0)
  two = pipe.generate(["a red circle moves up", "a blue square moves left"], seed=0, **args)
  assert [v.shape for v in two] == [(5, 16, 32, 3)] * 2 and two[0].dtype == np.uint8
  again = pipe.generate(["a red circle moves up", "a blue square moves left"], seed=0, **args)
  np.testing.assert_array_equal(two[0], again[0])
  np.testing.assert_array_equal(two[1], again[1])
  alone = pipe.generate(["a red circle moves up"], seed=0, **args)
  np.testing.assert_allclose(alone[0].astype(int), two[0].astype(int), atol=1)
  other_seed = pipe.generate(["a red circle moves up"], seed=1, **args)
  assert np.abs(other_seed[0].astype(int) - alone[0].astype(int)).max() > 0
  # One compiled sampler per (steps, guidance), shared by copies with other weights (progress samples).
  count = len(pipe._samplers)
  copy = dataclasses.replace(pipe, dit_params=jax.tree.map(lambda p: p + 1, pipe.dit_params))
  assert copy._sampler(2, 3.0) is pipe._sampler(2, 3.0) and len(pipe._samplers) == count


def test_image_request_gives_one_frame(pipe):
  (image,) = pipe.generate(["a green triangle"], num_frames=1, height=16, width=16, steps=1, guidance=1.0, seed=0)
  assert image.shape == (1, 16, 16, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_frames=6, height=16, width=16), "1 \\+ 4k frames"),
    (dict(num_frames=5, height=20, width=16), "height 20 is not divisible by 16"),
])
def test_bad_sizes_are_rejected(pipe, kwargs, message):
  with pytest.raises(ConfigError, match=message):
    pipe.generate(["a red circle"], steps=1, guidance=1.0, seed=0, **kwargs)


def test_empty_prompt_is_rejected(pipe):
  with pytest.raises(ConfigError, match="prompt is empty"):
    pipe.generate(["  "], num_frames=1, height=16, width=16, steps=1, guidance=1.0, seed=0)


def test_ddpm_objective_samples_with_ddim(pipe):
  config = pipe.config.copy_and_resolve_references()
  config.diffusion.objective, config.diffusion.prediction = "ddpm", "v"
  ddpm_pipe = dataclasses.replace(pipe, config=config)
  args = dict(num_frames=5, height=16, width=16, steps=3, guidance=2.0, seed=0)
  (a,), (b,) = ddpm_pipe.generate(["a red circle"], **args), ddpm_pipe.generate(["a red circle"], **args)
  assert a.shape == (5, 16, 16, 3)
  np.testing.assert_array_equal(a, b)
  (flow,) = pipe.generate(["a red circle"], **args)
  assert np.abs(flow.astype(int) - a.astype(int)).max() > 0


@pytest.mark.parametrize("source, first_latents", [("image", 1), ("video", 2)])
def test_two_stage_video_opens_on_the_first_stage_sample(pipe, source, first_latents):
  """Frame 0 is the first stage's sample (text-to-image, or frame 0 of a one-pass video), held
  clean while the rest is sampled image-to-video."""
  two_stage, one_pass = (dataclasses.replace(pipe, config=pipe.config.copy_and_resolve_references())
                         for _ in range(2))
  two_stage.config.sample.first_frame, one_pass.config.sample.first_frame = source, "joint"
  prompt, args = ["a red circle moves up"], dict(num_frames=5, height=16, width=16, steps=2, guidance=3.0)
  video = two_stage.generate(prompt, seed=3, **args)[0]
  assert video.shape == (5, 16, 16, 3)
  assert not np.array_equal(video, one_pass.generate(prompt, seed=3, **args)[0])
  c = pipe.config.vae.latent_channels
  first = two_stage._sample_latents(caption_ids(pipe.config, prompt), [(first_latents, 2, 2, c)], [[]],
                                    [(jax.random.fold_in(jax.random.key(3), 2**31 - 1), 0)], 2, 3.0)[0]
  # The causal VAE decodes frame 0 from latent frame 0 alone: the first stage's sample, exactly.
  np.testing.assert_array_equal(video[0], two_stage.decode(first[:1])[0])


def test_image_to_video_opens_on_the_given_frame(pipe):
  """The given frame is encoded and held clean: frame 0 is its VAE round trip, whatever the seed."""
  image = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
  args = dict(num_frames=5, height=16, width=32, steps=2, guidance=3.0)
  videos = [pipe.generate(["a red circle moves up"], seed=s, first_frames=[image], **args)[0] for s in (0, 1)]
  latent = pipe.encode(image[None])
  np.testing.assert_array_equal(videos[0][0], pipe.decode(latent)[0])
  np.testing.assert_array_equal(videos[1][0], videos[0][0])
  assert not np.array_equal(videos[0][1:], videos[1][1:])
  with pytest.raises(ConfigError, match=r"a given frame is \(16, 16, 3\); this request needs \(16, 32, 3\)"):
    pipe.generate(["a red circle moves up"], seed=0, first_frames=[image[:, :16]], **args)
  with pytest.raises(ConfigError, match="2 first frames for 1 prompts"):
    pipe.generate(["a red circle moves up"], seed=0, first_frames=[image, image], **args)


def test_a_saved_config_gains_keys_added_since():
  from sora_jax.generate import _with_defaults
  saved = {"model": {"width": 64}, "seed": 3}
  defaults = {"model": {"width": 128, "remat": "none"}, "seed": 0, "mesh": {"data": -1}}
  assert _with_defaults(saved, defaults) == {"model": {"width": 64, "remat": "none"}, "seed": 3,
                                             "mesh": {"data": -1}}

"""Conditions: training mask strategies, placing given pixels in latent space, and sampling with
them (held exactly, packed rows of mixed modes equal to each alone, bad inputs)."""

import jax
import numpy as np
import pytest

from sora_jax.config import ConfigError
from sora_jax.data.conditions import (
    MASK_STRATEGIES,
    Condition,
    apply_conditions,
    check_shares,
    draw_conditions,
    draw_strategy,
    encode_given,
    token_masks,
)
from sora_jax.data.synthetic import make_spec, render
from sora_jax.generate import Given, Request
from sora_jax.models.build import caption_ids
from sora_jax.models.patch import grid_positions
from sora_jax import modes

from helpers import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
  return tiny_pipeline()


def held_frames(strategy, frames=5, patch_t=1, seed=0):
  rng = np.random.default_rng(seed)
  z = np.zeros((frames, 2, 2, 1), np.float32)
  conditions = draw_conditions(strategy, z, patch_t, rng)
  positions = grid_positions((frames // patch_t, 1, 1))
  cond_mask, _ = token_masks(conditions, frames, positions, patch_t)
  return set(np.nonzero(np.repeat(cond_mask, patch_t))[0].tolist())


def test_every_mask_strategy_gives_the_frames_it_names():
  assert held_frames(None) == set()
  assert held_frames("image_head") == {0}
  assert held_frames("image_tail") == {4}
  assert held_frames("head_tail") == {0, 4}
  assert held_frames("head_tail", frames=2) == {0}  # never everything given
  for seed in range(20):
    head, tail, spread = (held_frames(s, seed=seed) for s in ("head_frames", "tail_frames", "random_frames"))
    assert head == set(range(len(head))) and 1 <= len(head) <= 4
    assert tail == set(range(5 - len(tail), 5)) and 1 <= len(tail) <= 4
    assert 1 <= len(spread) <= 4
  # Temporal patches of 2 latent frames: spans are whole patches.
  assert held_frames("image_tail", frames=6, patch_t=2) == {4, 5}
  assert all(len(held_frames("random_frames", frames=6, patch_t=2, seed=s)) % 2 == 0 for s in range(10))
  assert held_frames("image_head", frames=1) == set()  # an image is never conditioned on itself


def test_strategies_are_drawn_in_their_shares():
  shares = dict.fromkeys(MASK_STRATEGIES, 0.1) | {"image_head": 0.3}
  rng = np.random.default_rng(0)
  draws = [draw_strategy(shares, rng) for _ in range(20000)]
  assert abs(draws.count(None) / len(draws) - 0.2) < 0.015
  assert abs(draws.count("image_head") / len(draws) - 0.3) < 0.015
  assert abs(draws.count("tail_frames") / len(draws) - 0.1) < 0.01
  with pytest.raises(ConfigError, match="sum to 1.1"):
    check_shares(shares | {"random_frames": 0.4})
  with pytest.raises(ConfigError, match=r"data.cond.image_tail=-0.1 is a share"):
    check_shares(shares | {"image_tail": -0.1})


def test_a_training_batch_holds_the_strategy_frames_clean():
  from configs.shapes import get_config
  from sora_jax.train.dit_stage import dit_examples
  from helpers import fake_latent_cache

  config = get_config("tiny")
  config.data.cond.update(dict.fromkeys(MASK_STRATEGIES, 0.0) | {"tail_frames": 1.0})
  cache = fake_latent_cache(config, num_videos=24)
  example_at = dit_examples(config, (cache["latents"], lambda i, rng: "a red circle", cache["stats"]))
  for position in range(24):
    ex = example_at(position, 0)
    frames = ex["positions"][:, 0]
    if ex["grid"][0] == 1:
      assert not ex.get("cond_mask", np.zeros(1, bool)).any()
      continue
    held = set(frames[ex["cond_mask"]].tolist())
    assert held and max(held) == ex["grid"][0] - 1 and 0 not in held  # a tail, never everything
    assert held == set(range(min(held), ex["grid"][0]))


def test_image_tail_trains_on_the_still_tail_that_sampling_gives():
  from configs.shapes import get_config
  from sora_jax.data.latents import standardise
  from sora_jax.train.dit_stage import dit_examples
  from helpers import fake_latent_cache

  config = get_config("tiny")
  config.data.cond.update(dict.fromkeys(MASK_STRATEGIES, 0.0) | {"image_tail": 1.0})
  cache = fake_latent_cache(config, num_videos=24)
  stills = [np.full((1,) + m.shape[1:], 7.0, np.float32) for m, _ in cache["latents"]]
  with_stills = [(m, s, t) for (m, s), t in zip(cache["latents"], stills)]
  caption = lambda i, rng: "a red circle"
  plain = dit_examples(config, (cache["latents"], caption, cache["stats"]))
  still = dit_examples(config, (with_stills, caption, cache["stats"]))
  for position in range(24):
    a, b = plain(position, 0), still(position, 0)
    np.testing.assert_array_equal(a.get("cond_mask", False), b.get("cond_mask", False))
    if a["grid"][0] == 1:
      continue
    last = a["positions"][:, 0] == a["grid"][0] - 1
    np.testing.assert_array_equal(a["tokens"][~last], b["tokens"][~last])  # only the tail changes
    c = config.vae.latent_channels
    expected = standardise(np.full(c, 7.0, np.float32), cache["stats"])  # the still, standardised
    np.testing.assert_allclose(b["tokens"][last].reshape(-1, c) - expected, 0.0, atol=1e-5)
    assert b["cond_mask"][last].all() and not b["cond_mask"][~last].any()


def test_pixels_land_in_latent_space_as_the_causal_vae_encodes_them(pipe):
  video = render(make_spec("red", "circle", "right", num_frames=9, height=16, width=16))
  whole = pipe.encode(video)
  head = encode_given(pipe.encode, video[:5], 0, 9)
  np.testing.assert_allclose(head.latents, whole[:2], atol=1e-5)  # causal: a prefix is exact
  assert head.frame == 0
  tail = encode_given(pipe.encode, video[5:], 5, 9)  # frames 5..8 = latent frame 2
  assert tail.frame == 2 and tail.latents.shape == whole[2:].shape
  image = encode_given(pipe.encode, video[-1:], -1, 9)  # the last frame alone: a still group
  assert image.frame == 2 and image.latents.shape == (1,) + whole.shape[1:]
  # A still group encodes as the image alone (every latent frame of a still video is its first).
  still = np.repeat(video[-1:], 13, axis=0)
  np.testing.assert_allclose(image.latents, pipe.encode(still)[-1:], atol=1e-4)
  assert encode_given(pipe.encode, video[:1], 6, 9).frame == 2  # frames 5..8 share latent frame 2
  with pytest.raises(ConfigError, match="a clip at frame 0 needs 1 \\+ 4k frames, got 4"):
    encode_given(pipe.encode, video[:4], 0, 9)
  with pytest.raises(ConfigError, match="must start at frame 4j-3"):
    encode_given(pipe.encode, video[:4], 3, 9)
  with pytest.raises(ConfigError, match="do not fit in the 9 frames"):
    encode_given(pipe.encode, video[:1], 9, 9)


def test_given_latents_stay_exact_through_sampling(pipe):
  c = pipe.config.vae.latent_channels
  rng = np.random.default_rng(1)
  given = [
      Condition(rng.normal(size=(2, 2, 2, c)).astype(np.float32), 0),
      Condition(rng.normal(size=(1, 2, 2, c)).astype(np.float32), -1),
  ]
  (z,) = pipe._sample_latents(
      caption_ids(pipe.config, ["a red circle moves up"]),
      [(5, 2, 2, c)],
      [given],
      [(jax.random.key(0), 0)],
      3,
      3.0,
  )
  np.testing.assert_array_equal(z[:2], given[0].latents)
  np.testing.assert_array_equal(z[4:], given[1].latents)
  assert np.abs(z[2:4]).max() > 0


def test_conditions_must_fill_whole_temporal_patches():
  with pytest.raises(ConfigError, match="do not fill whole temporal patches of 2"):
    token_masks([Condition(np.zeros((1, 1, 1, 1)), 0)], 4, grid_positions((2, 1, 1)), 2)
  with pytest.raises(ConfigError, match="lies outside the 4 latent frames"):
    apply_conditions(
        np.zeros((4, 1, 1, 1)), [Condition(np.zeros((2, 1, 1, 1)), 3)], grid_positions((4, 1, 1)), 1
    )


def clip(colour="red", direction="right", frames=9, width=32):
  return render(make_spec(colour, "circle", direction, num_frames=frames, height=16, width=width))


def test_a_packed_row_of_mixed_modes_equals_each_mode_alone(pipe):
  size = dict(num_frames=9, height=16, width=32)
  video = clip()
  plans = [
      modes.Plan(Request("a red circle moves up", **size, seed=10)),
      modes.image_plan("a red circle moves up", video[0], at=-1, seed=11, **size),
      modes.extend_plan("a red circle moves right", video, direction="forward", overlap=1, seed=12, **size),
      modes.extend_plan("a red circle moves right", video, direction="backward", overlap=1, seed=13, **size),
      modes.connect_plan("a red circle", video, clip("blue"), overlap=1, seed=14, **size),
      modes.edit_plan("a blue circle moves right", video, strength=0.5, seed=15, **size),
  ]
  args = dict(steps=2, guidance=3.0, seed=0)
  together = modes.sample_plans(pipe, plans, **args)
  for plan, output in zip(plans, together):
    (alone,) = modes.sample_plans(pipe, [plan], **args)
    np.testing.assert_allclose(alone.astype(int), output.astype(int), atol=1)
  assert together[2].shape == (9 + 8, 16, 32, 3) and together[3].shape == (5 + 9, 16, 32, 3)
  np.testing.assert_array_equal(together[2][:9], video)  # forward: the input, then new frames
  np.testing.assert_array_equal(together[3][5:], video)  # backward: new frames, then the input
  assert together[4].shape == (9 + 4 + 9, 16, 32, 3)


def test_sdedit_keeps_the_source_at_low_strength(pipe):
  size = dict(num_frames=9, height=16, width=32)
  video = clip()
  roundtrip = pipe.decode(pipe.encode(video)).astype(int)
  args = dict(steps=4, guidance=3.0, seed=0)
  weak, strong = (
      modes.sample_plans(pipe, [modes.edit_plan("a blue circle", video, strength=s, **size)], **args)[0]
      for s in (0.02, 0.9)
  )
  assert np.abs(weak.astype(int) - roundtrip).mean() < 0.3 * np.abs(strong.astype(int) - roundtrip).mean()


def test_sdedit_schedules_start_at_the_strength():
  from sora_jax.diffusion.flow import FlowMatching

  times = FlowMatching().sampling_times(6, np.float32([2.0, 2.0]), np.float32([1.0, 0.3]))
  np.testing.assert_allclose(times[0], [1.0, 0.3], rtol=1e-6)
  np.testing.assert_allclose(times[-1], [0.0, 0.0])
  assert bool(np.all(np.diff(times, axis=0) < 0))


def test_loop_and_long_video(pipe):
  args = dict(steps=1, guidance=1.0, seed=0)
  (looped,) = modes.loop(pipe, ["a red circle moves right"], num_frames=9, height=16, width=16, **args)
  assert looped.shape == (9 + 4, 16, 16, 3)  # the video, then the new frames leading back to its start
  size = dict(num_frames=5, height=16, width=16)
  prompts = ["a red circle moves right", "a blue square moves up"]
  chunks = list(modes.long_videos(pipe, prompts, total_frames=20, overlap=1, **size, **args))
  assert len(chunks) == 5 and [sum(len(c[i]) for c in chunks) for i in range(2)] == [
      20,
      20,
  ]  # 5, then 4 a chunk
  (alone,) = zip(*modes.long_videos(pipe, prompts[:1], total_frames=20, overlap=1, **size, **args))
  np.testing.assert_allclose(
      np.concatenate(alone).astype(int), np.concatenate([c[0] for c in chunks]).astype(int), atol=1
  )
  # A long video can open on a picture: its first frame is the picture's VAE round trip.
  image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  first, *_ = modes.long_videos(pipe, prompts[:1], total_frames=9, overlap=1, first_frames=[image], **size, **args)
  np.testing.assert_array_equal(first[0][0], pipe.decode(pipe.encode(image[None]))[0])


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda v: modes.extend_plan(
                "x", v, direction="forward", overlap=3, num_frames=9, height=16, width=32
            ),
            "leaves nothing to generate in 3 latent frames",
        ),
        (
            lambda v: modes.extend_plan(
                "x", v[:4], direction="forward", overlap=2, num_frames=9, height=16, width=32
            ),
            "the video to extend has 4 frames; this needs at least 5",
        ),
        (
            lambda v: modes.extend_plan(
                "x", v, direction="sideways", overlap=1, num_frames=9, height=16, width=32
            ),
            "extend='sideways'",
        ),
        (lambda v: modes.edit_plan("x", v, strength=1.5, num_frames=9, height=16, width=32), "strength=1.5"),
        (lambda v: modes.edit_plan("x", v, strength=0.0, num_frames=9, height=16, width=32), "strength=0.0"),
        (
            lambda v: modes.edit_plan("x", v[:5], strength=0.5, num_frames=9, height=16, width=32),
            "the video to edit has 5 frames",
        ),
        (lambda v: modes.connect_plan("x", v, v, overlap=2, num_frames=9, height=16, width=32), "per side"),
        (
            lambda v: modes.image_plan("x", v[0], at=9, num_frames=9, height=16, width=32),
            "frame 9 is outside",
        ),
    ],
)
def test_bad_mode_inputs_are_one_clear_error(make, message):
  with pytest.raises(ConfigError, match=message):
    make(clip())


def test_inputs_are_checked_before_sampling(pipe):
  size = dict(num_frames=9, height=16, width=32)
  bad = Request("a red circle", **size, given=(Given(clip(width=16)[:1], 0),))
  good = Request("a red circle", **size)
  with pytest.raises(ConfigError, match=r"a given frame is \(16, 16, 3\); this request needs \(16, 32, 3\)"):
    pipe.sample([good, bad], steps=1, guidance=1.0, seed=0)
  with pytest.raises(ConfigError, match="steps=0"):
    pipe.sample([good], steps=0, guidance=1.0, seed=0)

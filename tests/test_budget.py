"""Token budgets (NaViT resize) and token dropping."""
import numpy as np
import pytest

from helpers import init_params, model_inputs, packed, random_example, tiny_dit
from sora_jax.data.budget import drop_rate, drop_tokens, fit_to_budget, sample_budget, tokens
from sora_jax.data.packing import unpack

PATCH = (1, 2, 2)


@pytest.mark.parametrize("clip, budget", [((121, 1080, 1920), 4096), ((33, 720, 1280), 1024),
                                          ((17, 256, 256), 4096), ((1, 1920, 1088), 256),
                                          ((121, 64, 64), 16)])
def test_fit_to_budget_keeps_aspect_strides_and_budget(clip, budget):
  frames, h, w = fit_to_budget(*clip, budget, PATCH)
  assert tokens(frames, h, w, PATCH) <= budget
  assert h % 16 == 0 and w % 16 == 0 and (frames - 1) % 4 == 0
  assert frames <= clip[0] and h <= clip[1] and w <= clip[2]  # never upscaled
  if min(h, w) > 32:  # aspect kept up to rounding to the 16-pixel stride
    assert abs(h / w - clip[1] / clip[2]) < 16 / min(h, w) + 1e-6
  # Close to the budget: one stride more on each side would not fit.
  if frames == clip[0] and (h, w) != clip[1:]:
    assert tokens(frames, h + 32, w + 32 * clip[2] // clip[1], PATCH) > budget


def test_fit_to_budget_trims_frames_when_space_alone_cannot_fit():
  frames, h, w = fit_to_budget(121, 16, 16, 16, PATCH)
  assert (h, w) == (16, 16) and tokens(frames, h, w, PATCH) <= 16 and frames == 61


def test_budget_too_small_for_one_frame_is_an_error():
  with pytest.raises(ValueError, match="over the budget"):
    fit_to_budget(1, 64, 4096, 2, PATCH, min_side=64)


def test_sample_budget_and_drop_schedule():
  rng = np.random.default_rng(0)
  draws = {sample_budget(rng, [256, 1024], [1, 3]) for _ in range(50)}
  assert draws == {256, 1024}
  assert drop_rate(0, 0.5, 0.0, 100) == 0.5 and drop_rate(50, 0.5, 0.0, 100) == 0.25
  assert drop_rate(500, 0.5, 0.0, 100) == 0.0


def test_dropped_examples_keep_positions_and_pack_like_alone():
  rng = np.random.default_rng(0)
  examples = [random_example(rng, g) for g in [(2, 2, 4), (3, 2, 2), (1, 4, 4)]]
  examples[0]["cond_mask"] = np.arange(16) < 4  # first frame given clean: always kept
  dropped = [drop_tokens(e, 0.5, rng) for e in examples]
  assert [len(d["tokens"]) for d in dropped] == [10, 6, 8]
  assert dropped[0]["cond_mask"][:4].all() and dropped[0]["cond_mask"].sum() == 4
  for e, d in zip(examples, dropped):  # tokens still sit at their own positions
    rows = [np.flatnonzero((e["positions"] == p).all(-1))[0] for p in d["positions"]]
    np.testing.assert_array_equal(e["tokens"][rows], d["tokens"])
  model = tiny_dit()
  batch, places = packed(dropped)
  params = init_params(model, batch, perturb=True)
  t = np.full(batch["grid"].shape[:2], 0.5, np.float32)
  out = unpack(np.asarray(model.apply({"params": params}, *model_inputs(batch, t))), dropped, places)
  alone_batch, alone_places = packed([dropped[1]])
  alone = model.apply({"params": params}, *model_inputs(alone_batch, t))
  assert np.abs(out[1]).max() > 1e-3
  np.testing.assert_allclose(out[1], unpack(np.asarray(alone), [dropped[1]], alone_places)[0], atol=1e-5)

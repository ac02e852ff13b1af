import numpy as np
import pytest

from sora_jax.data.packing import unpack
from sora_jax.models.dit import pattern_segment_ids
from sora_jax.models.patch import grid_positions, patchify, unpatchify

from helpers import PATCH_DIM, init_params, model_inputs, packed, random_example, tiny_dit


def test_patchify_roundtrip_and_positions():
  latent = np.random.default_rng(0).normal(size=(3, 4, 6, 5))
  tokens = patchify(latent, (1, 2, 2))
  assert tokens.shape == (3 * 2 * 3, 20)
  np.testing.assert_array_equal(unpatchify(tokens, (3, 2, 3), (1, 2, 2), 5), latent)
  pos = grid_positions((3, 2, 3))
  assert pos.shape == (18, 3) and tuple(pos[-1]) == (2, 1, 2)
  with pytest.raises(ValueError, match="height 4 is not divisible by the patch size 3"):
    patchify(latent, (1, 3, 2))


def test_attention_patterns_group_tokens():
  seg = np.array([[1, 1, 1, 1, 0]])
  pos = np.array([[[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [0, 0, 0]]])
  spatial = np.asarray(pattern_segment_ids(seg, pos, "spatial"))[0]
  temporal = np.asarray(pattern_segment_ids(seg, pos, "temporal"))[0]
  assert spatial[0] == spatial[1] != spatial[2] == spatial[3]
  assert temporal[0] == temporal[2] != temporal[1] == temporal[3]
  assert spatial[4] == temporal[4] == 0


@pytest.mark.parametrize("pos_emb", ["rope", "sincos", "rope+sincos"])
def test_output_same_alone_or_packed(pos_emb):
  rng = np.random.default_rng(0)
  a = random_example(rng, (2, 3, 2))
  b = random_example(rng, (1, 4, 4), "a blue square moves left")
  c = random_example(rng, (3, 2, 3), "a green triangle moves down")
  model = tiny_dit(pos_emb=pos_emb)
  batch_all, places = packed([b, a, c])
  params = init_params(model, batch_all, perturb=True)
  t_all = np.array([[0.3, 0.7, 0.5, 0.0]], np.float32)
  out_all = model.apply({"params": params}, *model_inputs(batch_all, t_all))
  assert out_all.shape == (1, 64, PATCH_DIM)
  batch_a, places_a = packed([a])
  out_a = model.apply({"params": params}, *model_inputs(batch_a, np.array([[0.7, 0, 0, 0]], np.float32)))
  np.testing.assert_allclose(unpack(np.asarray(out_all), [b, a, c], places)[1],
                             unpack(np.asarray(out_a), [a], places_a)[0], atol=1e-5)

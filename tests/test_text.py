import jax
import numpy as np

from sora_jax.models.text import BOS, HashedWordEncoder, tokenize


def test_tokenize_and_text_encoder_shapes():
  ids = tokenize(["a red circle moves to the right", ""], 8, 100)
  assert ids.shape == (2, 8) and ids[0, 0] == ids[1, 0] == BOS
  assert (ids[0, 1:8] >= 2).all() and (ids[1, 1:] == 0).all()
  encoder = HashedWordEncoder(100, 16, 1, 2)
  params = encoder.init(jax.random.key(0), ids)
  emb, mask = encoder.apply(params, ids)
  assert emb.shape == (2, 8, 16) and mask.tolist()[1] == [True] + [False] * 7


def test_one_changed_word_is_visible_at_init():
  """Captions that differ in one word ("left" / "right") must differ clearly in the encoder's
  output from the first step: if word vectors start small beside the positional table, the
  difference is a small perturbation the DiT learns to ignore (direction went unlearned)."""
  ids = tokenize(["a red circle moves to the right", "a red circle moves to the left"], 16, 4096)
  encoder = HashedWordEncoder(4096, 128, 1, 4)
  emb, _ = encoder.apply(encoder.init(jax.random.key(0), ids), ids)
  emb = np.asarray(emb)
  changed = np.linalg.norm(emb[0, 7] - emb[1, 7]) / np.linalg.norm(emb[0, 7])
  assert changed > 0.5, changed

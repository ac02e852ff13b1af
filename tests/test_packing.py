import numpy as np

from sora_jax.data.packing import first_fit, pack, padding_fraction, unpack

from helpers import random_example


def test_first_fit_respects_row_length_and_slots():
  places = first_fit([5, 3, 4, 2, 7, 1], rows=2, row_length=8, max_per_row=2)
  assert places == [(0, 0, 0), (0, 1, 5), (1, 0, 0), (1, 1, 4), None, None]


def test_pack_unpack_roundtrip_and_contract():
  rng = np.random.default_rng(0)
  examples = [random_example(rng, g) for g in [(1, 2, 2), (2, 1, 3), (1, 1, 1)]]
  examples[1]["cond_mask"] = np.array([1, 0, 0, 0, 0, 0], bool)
  places = first_fit([len(e["tokens"]) for e in examples], rows=2, row_length=8, max_per_row=2)
  batch = pack(examples, places, rows=2, row_length=8, max_per_row=2)
  assert batch["tokens"].shape == (2, 8, examples[0]["tokens"].shape[1])
  assert places == [(0, 0, 0), (1, 0, 0), (0, 1, 4)]
  assert batch["segment_ids"].tolist() == [[1, 1, 1, 1, 2, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
  assert batch["loss_mask"][1].tolist() == [0, 1, 1, 1, 1, 1, 0, 0]
  assert batch["grid"][0].tolist() == [[1, 2, 2], [1, 1, 1]]
  assert batch["text_ids"].shape[:2] == (2, 2)
  for ex, got in zip(examples, unpack(batch["tokens"], examples, places)):
    np.testing.assert_array_equal(got, ex["tokens"])
  assert padding_fraction(batch) == 5 / 16

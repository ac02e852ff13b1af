"""The checkpointable packing iterator: nothing lost, little padding, exact resume from a checkpoint."""
import numpy as np

from helpers import random_example
from sora_jax.data.stream import PackedBatches, epoch_order
from sora_jax.train.checkpoint import Checkpointer

# A mixed stream: images, short and long clips at several sizes (grids of latent patches).
GRIDS = [(1, 2, 3), (1, 4, 4), (2, 3, 3), (5, 3, 3), (3, 4, 6), (5, 4, 4), (1, 6, 8), (4, 2, 5)]


def stream_of(grids=GRIDS, seed=0):
  def example_at(position, step):
    rng = np.random.default_rng([seed, position])
    example = random_example(rng, grids[rng.integers(len(grids))])
    example["tokens"][:, 0] = position  # tags each token with its stream position
    return example
  return example_at


def batches(rows=4, row_length=256, max_per_row=16):
  return PackedBatches(stream_of(), rows=rows, row_length=row_length, max_per_row=max_per_row)


def positions_in(batch):
  seg, tag = batch["segment_ids"], batch["tokens"][..., 0]
  return sorted({int(p) for p in tag[seg > 0]})


def test_every_example_is_packed_once_and_padding_is_small():
  it = batches()
  seen, padding = [], []
  for _ in range(40):
    batch, metrics = next(it)
    seen += positions_in(batch)
    padding.append(metrics["padding_fraction"])
    assert metrics["examples"] == len(positions_in(batch)) and metrics["tokens"] == (batch["segment_ids"] > 0).sum()
  state = it.get_state()
  # Positions 0 .. next-1 were each either packed exactly once or are waiting: none lost.
  assert sorted(seen + state["waiting"]) == list(range(state["next"]))
  assert len(seen) == len(set(seen))
  assert np.mean(padding) < 0.02, np.mean(padding)  # the NaViT figure for a mixed stream


def test_restored_state_continues_the_same_batches(tmp_path):
  it = batches(rows=2, row_length=128)
  for _ in range(5):
    next(it)
  ckpt = Checkpointer(tmp_path / "ckpt")
  ckpt.save(5, {"w": np.zeros(3, np.float32)}, data=it, config={"seed": 0})
  ckpt.close()
  assert it.get_state()["waiting"], "the test should checkpoint a non-empty carry-over"
  expected = [next(it)[0] for _ in range(3)]

  resumed = batches(rows=2, row_length=128)
  ckpt = Checkpointer(tmp_path / "ckpt")
  state = ckpt.restore({"w": np.ones(3, np.float32)}, data=resumed)
  assert ckpt.restore_config() == {"seed": 0}
  ckpt.close()
  np.testing.assert_array_equal(state["w"], 0)
  for want in expected:
    got = next(resumed)[0]
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_epoch_order_visits_every_item_once_per_epoch_split_over_hosts():
  hosts = [epoch_order(10, seed=3, shard=i, num_shards=2) for i in range(2)]
  epoch = sorted([hosts[0][i] for i in range(5)] + [hosts[1][i] for i in range(5)])
  assert epoch == list(range(10))
  assert [hosts[0][i] for i in range(5)] != [hosts[0][i] for i in range(5, 10)]  # reshuffled

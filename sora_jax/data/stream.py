"""Checkpointable host-side batch iterators (grain `DatasetIterator`s).

Their state is a small JSON dict, saved with every checkpoint through grain's orbax handler (one
file per host), so a resumed run continues the exact data stream, packing carry-over included.
"""
import grain

from sora_jax.data.packing import RowSpace, pack, padding_fraction


class StepBatches(grain.DatasetIterator):
  """batch_fn(step) -> (batch, host_metrics), a pure function of the step: state is the step."""

  def __init__(self, batch_fn, step=0):
    super().__init__()
    self.batch_fn = batch_fn
    self.step = step

  def __next__(self):
    out = self.batch_fn(self.step)
    self.step += 1
    return out

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = int(state["step"])

  def restart_at(self, step):
    self.set_state({"step": step})


class PackedBatches(grain.DatasetIterator):
  """Fixed [rows, row_length] batches packed first-fit from this host's stream of examples.

  example_at(position, step) -> a packable example (see data/packing.py) is a pure function of
  the host's stream position (and of the step, for schedules such as token dropping). Examples
  that fit no row wait and are offered first to the next batch (oldest first), so none is lost
  and waits stay short. A batch draws fresh examples until every row is full or `max_waiting`
  examples wait. The state is positions only:
  {"step", "next": next fresh position, "waiting": [positions]}.
  batch_metrics(batch) -> extra host metrics (e.g. model FLOPs).
  """

  def __init__(self, example_at, *, rows, row_length, max_per_row, max_waiting=None, batch_metrics=None):
    super().__init__()
    self.example_at = example_at
    self.rows, self.row_length, self.max_per_row = rows, row_length, max_per_row
    self.max_waiting = max_waiting or max(8, 4 * rows)
    self.batch_metrics = batch_metrics or (lambda batch: {})
    self.set_state({"step": 0, "next": 0, "waiting": []})

  def get_state(self):
    return {"step": self.step, "next": self.next, "waiting": list(self.waiting)}

  def set_state(self, state):
    self.step, self.next = int(state["step"]), int(state["next"])
    self.waiting = [int(p) for p in state["waiting"]]

  def restart_at(self, step):
    """A fresh stream for `step` (a checkpoint from another host count carries other streams),
    starting past every position the first `step` batches can have drawn: data not seen yet."""
    self.set_state({"step": step, "next": step * (self.rows * self.max_per_row + self.max_waiting),
                    "waiting": []})

  def _example(self, position):
    example = self.example_at(position, self.step)
    if len(example["tokens"]) > self.row_length:
      raise ValueError(f"an example of {len(example['tokens'])} tokens does not fit a row of "
                       f"train.row_length={self.row_length}")
    return example

  def __next__(self):
    rows = RowSpace(self.rows, self.row_length, self.max_per_row)
    placed, waiting = [], []

    def offer(position):
      example = self._example(position)
      place = rows.place(len(example["tokens"]))
      if place is None:
        waiting.append(position)
      else:
        placed.append((example, place))

    for position in self.waiting:
      offer(position)
    while not rows.full() and len(waiting) < self.max_waiting:
      offer(self.next)
      self.next += 1
    self.waiting = waiting
    self.step += 1
    examples = [e for e, _ in placed]
    batch = pack(examples, [p for _, p in placed], rows=self.rows, row_length=self.row_length,
                 max_per_row=self.max_per_row)
    metrics = {"padding_fraction": padding_fraction(batch), "examples_per_row": len(placed) / self.rows,
               "waiting_examples": len(waiting), "tokens": int((batch["segment_ids"] > 0).sum()),
               "examples": len(placed), **self.batch_metrics(batch)}
    return batch, metrics


def epoch_order(num_items, seed, shard=0, num_shards=1):
  """Item index at each stream position of one host: every epoch a new permutation of all
  items, split round-robin over hosts (grain MapDataset; random access, nothing materialised)."""
  order = grain.MapDataset.range(num_items).shuffle(seed=seed).repeat()
  return order[shard::num_shards]

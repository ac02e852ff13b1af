"""Orbax checkpoints of a train state; only complete (finalized) checkpoints are ever read."""
import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Asynchronous saves (training continues while a step is written); the last `max_to_keep`
  are kept, plus every `keep_period`-th step as a permanent keeper when it is set."""

  def __init__(self, directory, max_to_keep=2, keep_period=None):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period or None,
                                           create=True, enable_async_checkpointing=True)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, like, step=None):
    """Restore into the structure (and shardings) of `like`; None if there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_saved(self, step=None):
    """Restore as saved (a dict tree of arrays) onto this process's first device, whatever mesh
    or process count wrote it: for sampling and export."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return self.manager.restore(step, args=ocp.args.StandardRestore(fallback_sharding=device))

  def save(self, step, state):
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

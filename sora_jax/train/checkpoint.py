"""Orbax checkpoints of a run: train state, data iterator state (one file per host) and config.

Only complete (finalized) checkpoints are ever read: orbax writes a step under a temporary name
and renames it when every item is written, so a run killed at any moment resumes from the last
complete step.
"""

import logging
import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Asynchronous saves (training continues while a step is written); the last `max_to_keep`
  are kept, plus every `keep_period`-th step and the `keep_steps` for good (e.g. the compute
  points of `sora-jax grid --workdir`)."""

  def __init__(self, directory, max_to_keep=2, keep_period=None, keep_steps=()):
    policies = [ocp.checkpoint_managers.LatestN(max_to_keep)]
    if keep_period:
      policies.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
    if keep_steps:
      policies.append(ocp.checkpoint_managers.CustomSteps(list(keep_steps)))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        create=True,
        enable_async_checkpointing=True,
    )
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, like, data=None, step=None):
    """Restore into the structure (and shardings) of `like`, and `data` (a grain iterator) in
    place; None if there is no checkpoint. A data state saved by another host count cannot be
    split or merged: the iterator then restarts its stream at the restored step."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    self._check_layout(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
        "state"
    ]
    if data is not None:
      try:
        self.manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data)))
      except (ValueError, KeyError, FileNotFoundError) as e:
        logging.warning(
            "step %d: no data state for %d hosts (%s); the data stream restarts",
            step,
            jax.process_count(),
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        data.restart_at(step)
    return state

  def restore_saved(self, step=None):
    """Restore the state as saved (a dict tree of arrays) onto this process's first device,
    whatever mesh or process count wrote it: for sampling and export."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    self._check_layout(step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    args = ocp.args.Composite(state=ocp.args.StandardRestore(fallback_sharding=device))
    return self.manager.restore(step, args=args)["state"]

  def _check_layout(self, step):
    if not (self.manager.directory / str(step) / "state").exists():
      raise ValueError(
          f"{self.manager.directory / str(step)}: not a sora_jax checkpoint of this version "
          "(no 'state' item; checkpoints hold state, data and config since 2026-11-22)"
      )

  def restore_config(self, step=None):
    """The config dict saved with a step (None if it holds none)."""
    step = self.latest_step() if step is None else step
    if step is None or "config" not in (self.manager.item_metadata(step) or {}):
      return None
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def save(self, step, state, data=None, config=None):
    items = {"state": ocp.args.StandardSave(state)}
    if data is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**items))

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

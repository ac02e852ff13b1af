"""Joining a multi-process (multi-host) job."""
import jax


def initialize(coordinator=None, num_processes=None, process_id=None):
  """jax.distributed.initialize: explicit (coordinator 'host:port', count, id) or auto-detected
  (Cloud TPU pods, GKE, SLURM) when no coordinator is given. Call before any other jax use."""
  # CPU processes exchange collectives through gloo; accelerators ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator is None:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)

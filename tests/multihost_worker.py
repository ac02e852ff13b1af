"""One process of the two-process test: trains the tiny DiT stage on 2 local CPU devices.

usage: python tests/multihost_worker.py PORT PROCESS_ID WORKDIR (the workdir holds the cache)
"""
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

from sora_jax.parallel.distributed import initialize  # noqa: E402

port, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
initialize(f"localhost:{port}", 2, process_id)

from multihost_config import config  # noqa: E402
from sora_jax.parallel.mesh import check_divisibility, make_mesh  # noqa: E402
from sora_jax.train.dit_stage import train_dit  # noqa: E402

c = config()
mesh = make_mesh(c.mesh)
check_divisibility(c, mesh)
train_dit(c, workdir, None, None, mesh)

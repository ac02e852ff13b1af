"""Device meshes from config: axis sizes with -1 filling the rest, multislice over DCN."""
import math

import jax
import numpy as np
from jax.experimental import mesh_utils

from sora_jax.config import ConfigError
from sora_jax.parallel.rules import MESH_AXES


def mesh_shape(sizes, num_devices, key="mesh"):
  """{axis: size or -1} -> sizes in MESH_AXES order whose product is num_devices."""
  shape = [int(sizes[a]) for a in MESH_AXES]
  if shape.count(-1) > 1:
    raise ConfigError(f"{key}: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
  for axis, size in zip(MESH_AXES, shape):
    if size == 0 or size < -1:
      raise ConfigError(f"{key}.{axis}={size} must be a positive size or -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ConfigError(f"{key}: {num_devices} devices are not divisible by the fixed axes "
                        f"{dict(zip(MESH_AXES, shape))} (product {known})")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ConfigError(f"{key}: axes {dict(zip(MESH_AXES, shape))} make {math.prod(shape)} devices, "
                      f"but there are {num_devices}")
  return tuple(shape)


def make_mesh(mesh_cfg, devices=None):
  """Mesh over `devices` (default: all) with axes MESH_AXES.

  mesh_cfg.<axis> sizes the axis inside a slice (ICI); mesh_cfg.dcn.<axis> multiplies it across
  slices (DCN) for multislice jobs, where the hybrid mesh keeps the slow links on the DCN axes.
  """
  devices = jax.devices() if devices is None else list(devices)
  dcn = tuple(int(mesh_cfg.dcn[a]) for a in MESH_AXES)
  num_slices = math.prod(dcn)
  if len(devices) % num_slices:
    raise ConfigError(f"mesh.dcn: {len(devices)} devices do not split into {num_slices} slices")
  ici = mesh_shape(mesh_cfg, len(devices) // num_slices)
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if num_slices == 1:
    device_grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
  else:
    device_grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, allow_split_physical_axes=True)
  return jax.sharding.Mesh(np.asarray(device_grid), MESH_AXES, axis_types=axis_types)


def check_divisibility(config, mesh):
  """Start-up errors for shapes the mesh cannot split, each naming its config key."""
  size = dict(zip(mesh.axis_names, mesh.devices.shape))
  batch_shards = size["data"] * size["fsdp"]
  checks = (
      ("train.rows", config.train.rows, batch_shards, "data x fsdp"),
      ("vae_train.batch_size", config.vae_train.batch_size, batch_shards, "data x fsdp"),
      ("train.row_length", config.train.row_length, size["context"], "mesh.context"),
      ("model.num_heads", config.model.num_heads, size["tensor"], "mesh.tensor"),
      ("model.width", config.model.width, size["fsdp"] * size["context"], "fsdp x context"),
      ("model.text.num_heads", config.model.text.num_heads, size["tensor"], "mesh.tensor"),
  )
  for key, value, divisor, axis in checks:
    if value % divisor:
      raise ConfigError(f"{key}={value} is not divisible by {axis}={divisor}")
  for key in ("train.rows", "vae_train.batch_size"):
    section, name = key.split(".")
    if config[section][name] % jax.process_count():
      raise ConfigError(f"{key}={config[section][name]} is not divisible by the {jax.process_count()} hosts")

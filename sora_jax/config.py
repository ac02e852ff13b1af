"""Start-up validation of an experiment config: one clear line naming the key, or nothing."""
import ml_collections

from sora_jax.diffusion import OBJECTIVES
from sora_jax.nn.attention import IMPLEMENTATIONS
from sora_jax.models.dit import ATTENTION_PATTERNS, MAX_EXAMPLES_PER_ROW, POSITION_EMBEDDINGS, REMAT_POLICIES

VAE_SPATIAL, VAE_TEMPORAL = 8, 4


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def mesh_config(data=-1, fsdp=1, context=1, tensor=1, dcn_data=1):
  """The `mesh` section: axis sizes inside a slice (-1 fills) and across slices (dcn)."""
  return ml_collections.ConfigDict({
      "data": data, "fsdp": fsdp, "context": context, "tensor": tensor,
      "dcn": {"data": dcn_data, "fsdp": 1, "context": 1, "tensor": 1}})


def check_video_size(num_frames, height, width, patch, what="video"):
  """Frames must be 1 + 4k; height/width divisible by the VAE stride times the patch size."""
  if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL:
    raise ConfigError(f"{what}: {num_frames} frames; the causal VAE needs 1 + {VAE_TEMPORAL}k frames (1, 5, 9, ...)")
  latent_frames = 1 + (num_frames - 1) // VAE_TEMPORAL
  if latent_frames % patch[0]:
    raise ConfigError(f"{what}: {latent_frames} latent frames are not divisible by the temporal patch {patch[0]}")
  for name, size, p in (("height", height, patch[1]), ("width", width, patch[2])):
    stride = VAE_SPATIAL * p
    if size < stride or size % stride:
      raise ConfigError(f"{what}: {name} {size} is not divisible by {stride} (VAE stride {VAE_SPATIAL} x patch {p})")


def validate(c):
  patch = tuple(c.model.patch)
  for f in c.data.frames:
    check_video_size(f, 8 * patch[1], 8 * patch[2], patch, what=f"data.frames={f}")
  for h, w in c.data.sizes:
    check_video_size(1, h, w, patch, what=f"data.sizes entry {(h, w)}")
  check_video_size(c.sample.num_frames, c.sample.height, c.sample.width, patch, what="sample")
  check_video_size(c.vae_train.clip_frames, c.vae_train.clip_size, c.vae_train.clip_size, (1, 1, 1),
                   what="vae_train clip")
  if c.model.width % c.model.num_heads:
    raise ConfigError(f"model.width={c.model.width} is not divisible by model.num_heads={c.model.num_heads}")
  if c.model.text.width % c.model.text.num_heads:
    raise ConfigError(f"model.text.width={c.model.text.width} is not divisible by model.text.num_heads={c.model.text.num_heads}")
  for p in c.model.attention_patterns:
    if p not in ATTENTION_PATTERNS:
      raise ConfigError(f"model.attention_patterns has {p!r}; choose from {ATTENTION_PATTERNS}")
  if c.model.pos_emb not in POSITION_EMBEDDINGS:
    raise ConfigError(f"model.pos_emb={c.model.pos_emb!r}; choose from {POSITION_EMBEDDINGS}")
  if c.model.attention_impl not in IMPLEMENTATIONS:
    raise ConfigError(f"model.attention_impl={c.model.attention_impl!r}; choose from {IMPLEMENTATIONS}")
  if c.model.remat not in REMAT_POLICIES:
    raise ConfigError(f"model.remat={c.model.remat!r}; choose from {tuple(REMAT_POLICIES)}")
  if c.model.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"model.dtype={c.model.dtype!r}; choose float32 or bfloat16")
  if c.diffusion.objective not in OBJECTIVES:
    raise ConfigError(f"diffusion.objective={c.diffusion.objective!r}; choose from {OBJECTIVES}")
  if not 1 <= c.train.max_per_row <= MAX_EXAMPLES_PER_ROW:
    raise ConfigError(f"train.max_per_row={c.train.max_per_row} must be in [1, {MAX_EXAMPLES_PER_ROW}]")
  patch_tokens = patch[0] * patch[1] * patch[2]
  largest = max((1 + (f - 1) // VAE_TEMPORAL) * h * w // (VAE_SPATIAL ** 2 * patch_tokens)
                for f in c.data.frames for h, w in c.data.sizes)
  if largest > c.train.row_length:
    raise ConfigError(f"train.row_length={c.train.row_length} is shorter than the largest example ({largest} tokens)")
  for key in ("steps", "rows", "row_length"):
    if c.train[key] < 1:
      raise ConfigError(f"train.{key}={c.train[key]} must be positive")

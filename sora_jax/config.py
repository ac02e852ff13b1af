"""Experiment configs: the default keys, and start-up validation with one clear line naming the key."""

import ml_collections

from sora_jax.data.synthetic import CAMERAS, COLOURS, NEW_COLOURS, TRACKS
from sora_jax.diffusion import OBJECTIVES
from sora_jax.nn.attention import IMPLEMENTATIONS
from sora_jax.scaling.mup import PARAMETRIZATIONS
from sora_jax.models.dit import ATTENTION_PATTERNS, MAX_EXAMPLES_PER_ROW, POSITION_EMBEDDINGS, REMAT_POLICIES

VAE_SPATIAL, VAE_TEMPORAL = 8, 4
# Where a sampled video's frame 0 comes from: sampled with the rest in one pass, a text-to-image
# sample, or frame 0 of a one-pass video; the last two then sample the rest image-to-video.
FIRST_FRAME_SOURCES = ("joint", "image", "video")
TEXT_KINDS = ("hashed", "t5")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def mesh_config(data=-1, fsdp=1, context=1, tensor=1, dcn_data=1):
  """The `mesh` section: axis sizes inside a slice (-1 fills) and across slices (dcn)."""
  return ml_collections.ConfigDict(
      {
          "data": data,
          "fsdp": fsdp,
          "context": context,
          "tensor": tensor,
          "dcn": {"data": dcn_data, "fsdp": 1, "context": 1, "tensor": 1},
      }
  )


SHAPES_SIZES = ((32, 32), (32, 48), (48, 32), (48, 48), (32, 64), (64, 32), (48, 64), (64, 48), (64, 64))


def default_config():
  """Every config key with the moving-shapes defaults; configs/<family>.py override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.frames = (1, 5, 9, 13, 17)  # 1 + 4k: the causal VAE encodes frame 0 alone
  c.data.sizes = SHAPES_SIZES  # (height, width) pairs; divisible by 8 * patch
  c.data.latents = ""  # `sora-jax cache-latents` output to train on (else shapes)
  c.data.clips = ""  # `sora-jax prepare` output, VAE-encoded as read (else shapes)
  c.data.num_examples = 3000  # videos generated, encoded once and cached as latents
  c.data.textured_fraction = 0.5  # share of textured (vs plain) backgrounds
  c.data.camera = ""  # shapes: a camera motion over every video (synthetic.CAMERAS), or none
  c.data.tracks = ("line",)  # shapes: the paths drawn (synthetic.TRACKS); others name no direction
  c.data.colours = ()  # shapes: draw only these (synthetic COLOURS / NEW_COLOURS); empty: every COLOURS one
  # Share of examples trained on the captioner's caption where `prepare --captioner` wrote one
  # (DALL-E 3 trains on 95 % generated captions, the rest kept for the users' own style).
  c.data.generated_caption_share = 0.0
  c.data.caption_dropout = 0.1  # null caption rate, for classifier-free guidance
  # Mask strategies: share of videos trained with each kind of given frames (data/conditions.py);
  # the rest (at least as large as any one of them, as a rule) is text-to-video.
  from sora_jax.data.conditions import MASK_STRATEGIES  # here: data.conditions imports this module

  c.data.cond = ml_collections.ConfigDict({name: 0.0 for name in MASK_STRATEGIES})
  c.data.opening_frame_motion = 0.0  # shapes: share of 1-frame examples captioned with their track's motion

  c.vae = ml_collections.ConfigDict()
  c.vae.latent_channels = 16
  c.vae.base_channels = 16
  c.vae.channel_mult = (1, 2, 2, 4)
  c.vae.num_res_blocks = 1
  c.vae.temporal_downsample = (False, True, True)
  c.vae.kl_weight = 1e-4

  c.vae_train = ml_collections.ConfigDict()
  c.vae_train.steps = 300
  c.vae_train.batch_size = 8
  c.vae_train.clip_frames = 9
  c.vae_train.clip_size = 32
  c.vae_train.lr = 5e-4
  c.vae_train.warmup = 50
  c.vae_train.pca_batches = 32  # batches whose PCA initialises the VAE's linear path
  # Weight of change within a latent frame's 4 frames in that PCA: at 1 (plain PCA) a moving
  # shape decodes still within each latent frame and jumps between them (docs/design.md).
  c.vae_train.pca_motion_weight = 4.0
  # Real footage (train/video_vae_stage.py, configs/video_vae.py): a `sora-jax prepare` output
  # instead of the shapes; then the crops come from `buckets` (frames, height, width) in turn, and
  # the loss adds SSIM and, after disc_start steps, a 3D patch discriminator.
  c.vae_train.clips = ""
  c.vae_train.buckets = ((9, 64, 64),)
  c.vae_train.ssim_weight = 0.2
  c.vae_train.disc_start = 1000
  c.vae_train.disc_weight = 0.5
  c.vae_train.disc_channels = 32
  c.vae_train.disc_layers = 3

  c.model = ml_collections.ConfigDict()
  c.model.patch = (1, 2, 2)
  c.model.width = 128
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_ratio = 4.0
  c.model.attention_patterns = ("full",)  # cycled over layers: full | spatial | temporal
  c.model.pos_emb = "rope"  # rope (3D rotary) | sincos (p_t(t) + p_s(h, w)) | rope+sincos
  c.model.qk_norm = True
  c.model.attention_impl = "xla"
  c.model.dtype = "float32"  # compute dtype; parameters stay float32
  c.model.remat = "none"  # none | full | dots (save matmul outputs)
  c.model.scan_layers = False  # nn.scan the blocks (deep models: compile time, memory)
  c.model.long_skips = False  # U-ViT / EasyAnimate: block i's output joins block depth-1-i's input
  # standard | mup (scaling/mup.py): under muP a width-W model trains like its base width's,
  # so learning rates tuned at the base transfer; at W = base the two are the same model.
  c.model.parametrization = "standard"
  c.model.mup_base_width = 128
  c.model.mup_base_head_dim = 32  # attention logits sqrt(d0) / d under muP
  c.model.text = ml_collections.ConfigDict()
  # hashed: the small word-hash encoder trained with the DiT (embedded default, below);
  # t5: a frozen pretrained T5 v1.1 / UMT5 encoder read from the local folder `path`
  # (models/frozen_text.py); max_len applies to both.
  c.model.text.kind = "hashed"
  c.model.text.path = ""
  c.model.text.dtype = "float32"  # t5: weights and compute (bfloat16 halves its memory)
  c.model.text.embed_dtype = "bfloat16"  # t5: its output as the DiT gets it, cached or computed
  c.model.text.vocab_size = 4096
  c.model.text.max_len = 24
  c.model.text.width = 128
  c.model.text.depth = 1
  c.model.text.num_heads = 4

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.objective = "flow"  # flow | ddpm
  c.diffusion.time_sampling = "logit_normal"
  c.diffusion.logit_mean = 0.0
  c.diffusion.logit_std = 1.0
  c.diffusion.shift_base_tokens = 64  # shift = sqrt(tokens / base)
  c.diffusion.beta_schedule = "linear"  # ddpm only: linear | cosine
  c.diffusion.prediction = "eps"  # ddpm only: eps | v

  c.train = ml_collections.ConfigDict()
  c.train.steps = 3000
  c.train.rows = 4  # B: packed rows per step
  c.train.row_length = 256  # L: tokens per row
  c.train.max_per_row = 16  # E: example slots per row
  c.train.token_drop = (0.0, 0.0, 0)  # NaViT token dropping: rate from, to, over steps
  c.train.lr = 2e-3
  c.train.warmup = 100
  c.train.weight_decay = 0.0  # AdamW, on kernels and embeddings only
  c.train.adam_eps = 1e-8  # x base width / width under muP
  c.train.schedule = "cosine"  # cosine (to 10 % of lr) | constant, after warmup
  c.train.grad_accum = 1  # micro-batches per update
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.995
  c.train.log_every = 25
  # Batches made ahead in a background thread while the step runs (train/loop.py); the logged
  # `input_wait` is the share of time still spent waiting for data (0: the input keeps up).
  c.train.prefetch = 2
  c.train.checkpoint_every = 500
  c.train.sample_every = 0  # fixed-seed progress videos every N DiT steps (0: off)
  c.train.keep_checkpoints = 2  # the last N checkpoints ...
  c.train.keep_period = 0  # ... plus every K-th step for good (0: none)
  c.train.keep_steps = ()  # ... and these steps (e.g. compute points for `sora-jax grid --workdir`)
  c.train.peak_flops = 0.0  # per device, for the MFU metric; 0: known device kinds
  c.train.max_nonfinite_in_row = 20  # non-finite steps are skipped; this many in a row stop

  c.mesh = mesh_config()  # all devices on `data` by default

  # Fixed-noise validation loss (train/validation.py): the same examples, times and noise at
  # every evaluation, so it changes only with the weights.
  c.validation = ml_collections.ConfigDict()
  c.validation.every = 0  # DiT steps between validation losses in training (0: off)
  c.validation.times = (0.1, 0.3, 0.5, 0.7, 0.9)  # the fixed time grid (flow: 0 data, 1 noise)
  c.validation.seed = 7919  # noise and the training-distribution sample; not the training seed
  c.validation.train_sample = 32  # videos drawn from the training distribution
  c.validation.held_out = True  # plus the held-out prompts' true clips at the sampling size
  c.validation.real_clips = 64  # real data: clips of the validation split scored (the first N)

  c.aot = ml_collections.ConfigDict()
  c.aot.example_grid = (5, 3, 3)  # patch grid of the examples assumed by `aot` FLOPs

  # `sora-jax finetune`: what trains on the frozen base (configs/finetune/). kind "" is a run of
  # its own; lora adds rank-`rank` paths to the Dense layers whose names match `targets`
  # (regexes, e.g. 'block_1/self_attn/query'), in blocks of `block_patterns` only if given.
  c.adapter = ml_collections.ConfigDict()
  c.adapter.kind = ""  # "" | lora
  c.adapter.rank = 8
  c.adapter.alpha = 8.0
  c.adapter.targets = (r"self_attn/(query|key|value|out)$",)
  c.adapter.block_patterns = ()  # e.g. ("temporal",): MotionLoRA
  c.adapter.extractor = "vae"  # tora: displacement maps to tokens by the frozen VAE | a learned conv
  c.adapter.sigma = 0.06  # tora: Gaussian spread of a track's displacement, x min(H, W)
  c.adapter.dense_share = 0.5  # tora training: examples given the shape's dense flow, not its track
  c.adapter.levels = 1  # tora: motion features, 1 shared by every block .. model.depth (one per block)

  c.sample = ml_collections.ConfigDict()
  c.sample.steps = 30
  c.sample.guidance = 4.0
  c.sample.num_frames = 17
  c.sample.height = 48
  c.sample.width = 48
  c.sample.fps = 8
  c.sample.chunk_latents = 2
  c.sample.adapter_eval_seeds = 3  # finetune: seeds of the held-out prompts, with and without the adapter
  c.sample.first_frame = "joint"  # joint (one pass) | image | video: where frame 0 comes from
  # With a trajectory (Tora): the unconditional pass of guidance drops it with the caption
  # ("joint") or keeps it ("caption"); joint: TrajError 0.072 against 0.090 (docs/benchmarks.md).
  c.sample.trajectory_guidance = "joint"
  c.sample.eval_modes = "all"  # prompting modes the evaluation scores besides text-to-video
  return c


def finetune_config(adapter, **sections):
  """A fine-tune config (configs/finetune/), laid over the base run's config by `sora-jax
  finetune`. Its adapter section is whole (the defaults, then `adapter`: a base has none of its
  own), so `--config.adapter.KEY=VALUE` reaches every adapter key; the other sections hold only
  the keys given, since a default there would overwrite the base's value, and so only those
  take overrides."""
  c = ml_collections.ConfigDict({"adapter": default_config().adapter.to_dict()})
  c.adapter.update(adapter)
  for name, keys in sections.items():
    c[name] = keys
  return c


def check_video_size(num_frames, height, width, patch, what="video"):
  """Frames must be 1 + 4k; height/width divisible by the VAE stride times the patch size."""
  if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL:
    raise ConfigError(
        f"{what}: {num_frames} frames; the causal VAE needs 1 + {VAE_TEMPORAL}k frames (1, 5, 9, ...)"
    )
  latent_frames = 1 + (num_frames - 1) // VAE_TEMPORAL
  if latent_frames % patch[0]:
    raise ConfigError(
        f"{what}: {latent_frames} latent frames are not divisible by the temporal patch {patch[0]}"
    )
  for name, size, p in (("height", height, patch[1]), ("width", width, patch[2])):
    stride = VAE_SPATIAL * p
    if size < stride or size % stride:
      raise ConfigError(
          f"{what}: {name} {size} is not divisible by {stride} (VAE stride {VAE_SPATIAL} x patch {p})"
      )


def validate(c):
  patch = tuple(c.model.patch)
  for f in c.data.frames:
    check_video_size(f, 8 * patch[1], 8 * patch[2], patch, what=f"data.frames={f}")
  for h, w in c.data.sizes:
    check_video_size(1, h, w, patch, what=f"data.sizes entry {(h, w)}")
  check_video_size(c.sample.num_frames, c.sample.height, c.sample.width, patch, what="sample")
  check_video_size(
      c.vae_train.clip_frames, c.vae_train.clip_size, c.vae_train.clip_size, (1, 1, 1), what="vae_train clip"
  )
  for bucket in c.vae_train.buckets if c.vae_train.clips else ():
    if len(bucket) != 3 or min(bucket[1:]) < 16:
      raise ConfigError(
          f"vae_train.buckets entry {tuple(bucket)}: (frames, height, width), sides >= 16 (SSIM's window)"
      )
    check_video_size(
        bucket[0], bucket[1], bucket[2], (1, 1, 1), what=f"vae_train.buckets entry {tuple(bucket)}"
    )
  if not c.vae_train.pca_motion_weight > 0:
    raise ConfigError(
        f"vae_train.pca_motion_weight={c.vae_train.pca_motion_weight} must be > 0 (1: plain PCA)"
    )
  unknown = [x for x in c.data.colours if x not in COLOURS and x not in NEW_COLOURS]
  if unknown:
    raise ConfigError(f"data.colours has {unknown[0]!r}; choose from {tuple(COLOURS) + tuple(NEW_COLOURS)}")
  if c.sample.trajectory_guidance not in ("joint", "caption"):
    raise ConfigError(f"sample.trajectory_guidance={c.sample.trajectory_guidance!r}; choose joint or caption")
  bad = [x for x in c.data.tracks if x not in TRACKS]
  if bad or not c.data.tracks:
    raise ConfigError(f"data.tracks={tuple(c.data.tracks)}; choose one or more of {TRACKS}")
  if c.data.camera and c.data.camera not in CAMERAS:
    raise ConfigError(f"data.camera={c.data.camera!r}; choose from {tuple(CAMERAS)} or ''")
  from sora_jax.adapters import check_adapter  # here: adapters imports this module

  check_adapter(c)
  for key in ("caption_dropout", "opening_frame_motion", "textured_fraction", "generated_caption_share"):
    if not 0.0 <= c.data[key] <= 1.0:
      raise ConfigError(f"data.{key}={c.data[key]} is a share; it must be in [0, 1]")
  from sora_jax.data.conditions import check_shares  # here: data.conditions imports this module

  check_shares(c.data.cond)
  if c.model.width % c.model.num_heads:
    raise ConfigError(f"model.width={c.model.width} is not divisible by model.num_heads={c.model.num_heads}")
  if c.model.text.kind not in TEXT_KINDS:
    raise ConfigError(f"model.text.kind={c.model.text.kind!r}; choose from {TEXT_KINDS}")
  if c.model.text.kind == "t5" and not c.model.text.path:
    raise ConfigError(
        "model.text.kind=t5 needs model.text.path: a local T5 / UMT5 folder (README, 'Text encoder')"
    )
  if c.model.text.width % c.model.text.num_heads:
    raise ConfigError(
        f"model.text.width={c.model.text.width} is not divisible by model.text.num_heads={c.model.text.num_heads}"
    )
  for p in c.model.attention_patterns:
    if p not in ATTENTION_PATTERNS:
      raise ConfigError(f"model.attention_patterns has {p!r}; choose from {ATTENTION_PATTERNS}")
  if c.model.pos_emb not in POSITION_EMBEDDINGS:
    raise ConfigError(f"model.pos_emb={c.model.pos_emb!r}; choose from {POSITION_EMBEDDINGS}")
  if c.model.attention_impl not in IMPLEMENTATIONS:
    raise ConfigError(f"model.attention_impl={c.model.attention_impl!r}; choose from {IMPLEMENTATIONS}")
  if c.model.scan_layers and c.model.depth % len(c.model.attention_patterns):
    raise ConfigError(
        f"model.depth={c.model.depth} is not divisible by the {len(c.model.attention_patterns)} "
        "model.attention_patterns (scan_layers repeats one group of them)"
    )
  if c.model.parametrization not in PARAMETRIZATIONS:
    raise ConfigError(f"model.parametrization={c.model.parametrization!r}; choose from {PARAMETRIZATIONS}")
  for key in ("mup_base_width", "mup_base_head_dim"):
    if c.model[key] < 1:
      raise ConfigError(f"model.{key}={c.model[key]} must be positive")
  if c.model.long_skips and (c.model.scan_layers or c.model.depth % 2):
    raise ConfigError(
        f"model.long_skips needs an even model.depth (got {c.model.depth}) and model.scan_layers off: "
        "block i's output joins block depth-1-i"
    )
  if not c.validation.times or not all(0.0 < t < 1.0 for t in c.validation.times):
    raise ConfigError(f"validation.times={tuple(c.validation.times)}: give times strictly between 0 and 1")
  if c.validation.every < 0 or c.validation.train_sample < 0:
    raise ConfigError("validation.every and validation.train_sample must be >= 0")
  real = bool(c.data.latents or c.data.clips)
  if not real and c.validation.train_sample + 16 * c.validation.held_out < 2:
    raise ConfigError(
        "validation: the set needs at least 2 examples (validation.train_sample, validation.held_out)"
    )
  if real and c.validation.real_clips < 2:
    raise ConfigError(f"validation.real_clips={c.validation.real_clips}: the set needs at least 2 clips")
  if c.sample.first_frame not in FIRST_FRAME_SOURCES:
    raise ConfigError(f"sample.first_frame={c.sample.first_frame!r}; choose from {FIRST_FRAME_SOURCES}")
  if c.sample.first_frame != "joint" and patch[0] != 1:
    raise ConfigError(
        f"sample.first_frame={c.sample.first_frame!r} needs model.patch[0] == 1 (got {patch[0]}): "
        "frame 0 must be its own tokens"
    )
  from sora_jax.mode_evaluation import parse_modes  # here: it imports this module

  parse_modes(c.sample.eval_modes)
  if c.model.remat not in REMAT_POLICIES:
    raise ConfigError(f"model.remat={c.model.remat!r}; choose from {tuple(REMAT_POLICIES)}")
  if c.model.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"model.dtype={c.model.dtype!r}; choose float32 or bfloat16")
  if c.diffusion.objective not in OBJECTIVES:
    raise ConfigError(f"diffusion.objective={c.diffusion.objective!r}; choose from {OBJECTIVES}")
  if not 1 <= c.train.max_per_row <= MAX_EXAMPLES_PER_ROW:
    raise ConfigError(f"train.max_per_row={c.train.max_per_row} must be in [1, {MAX_EXAMPLES_PER_ROW}]")
  patch_tokens = patch[0] * patch[1] * patch[2]
  largest = max(
      (1 + (f - 1) // VAE_TEMPORAL) * h * w // (VAE_SPATIAL**2 * patch_tokens)
      for f in c.data.frames
      for h, w in c.data.sizes
  )
  if largest > c.train.row_length:
    raise ConfigError(
        f"train.row_length={c.train.row_length} is shorter than the largest example ({largest} tokens)"
    )
  if not all(0.0 <= r < 1.0 for r in c.train.token_drop[:2]):
    raise ConfigError(f"train.token_drop={tuple(c.train.token_drop)}: rates must be in [0, 1)")
  if c.data.latents and c.data.clips:
    raise ConfigError(
        "data.latents and data.clips are both set: train from cached latents or from clips, not both"
    )
  if c.train.schedule not in ("cosine", "constant"):
    raise ConfigError(f"train.schedule={c.train.schedule!r}; choose cosine or constant")
  for key in ("steps", "rows", "row_length", "grad_accum"):
    if c.train[key] < 1:
      raise ConfigError(f"train.{key}={c.train[key]} must be positive")
  if not all(isinstance(s, int) and s >= 1 for s in c.train.keep_steps):
    raise ConfigError(f"train.keep_steps={tuple(c.train.keep_steps)}: give positive step numbers")

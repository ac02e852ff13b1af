"""`sora-jax export --serving`: jax.export artefacts of one guided denoising step and of the VAE
decoder, and a loader that samples a video from them and the exported weights alone, without
building the models (no flax module is constructed: the artefacts hold the computation).

OUT/serving/
  denoise_step.jax   step(dit weights, x, given, held, i, text, null, guidance) -> x after
                     sampling step i of the export's `steps`: x, given [B, T, h, w, C] standardised
                     latents, held [B, T] latent frames given (kept at `given`), text and null
                     (ids [B, Lt], embeddings [B, Lt, D] or None): the caption and the empty one.
                     Batch and latent size are symbolic where the model allows (the manifest says).
  text_encode.jax    with a frozen T5 / UMT5: encode(text_encoder weights by their file names,
                     ids [B, Lt]) -> embeddings [B, Lt, D]; batch symbolic.
  vae_decode.jax     decode(vae weights, z [B, T, h, w, C]) -> video [B, F, H, W, 3] in [-1, 1],
                     at the export's sample size (the chunked decoder unrolls over time).
  manifest.json      shapes and dtypes of every input, the symbolic dimensions, the platforms,
                     steps and default guidance, the null caption's ids, the tokenizer settings,
                     the jax version that wrote them and the compatibility window.

Weights are inputs (the export's safetensors, read by name), so an artefact is small and one
artefact serves every checkpoint of the same architecture.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL, ConfigError
from sora_jax.data.transforms import to_uint8
from sora_jax.weights import unflatten

SERVING = "serving"
STEP_FILE, DECODE_FILE, MANIFEST = "denoise_step.jax", "vae_decode.jax", "manifest.json"
ENCODE_FILE = "text_encode.jax"
# jax.export guarantees that an artefact serialised today can be called by jax releases for at
# least 6 months (backward compatibility) and that today's jax reads artefacts up to 6 months old.
COMPATIBILITY = "jax.export: loadable by jax releases within 6 months after the writing version"


def _step_fn(pipe, steps):
  from sora_jax.diffusion import make_objective, resolution_shift
  from sora_jax.diffusion.sampling import guided

  c = pipe.config
  objective = make_objective(c.diffusion)
  pt, ph, pw = tuple(c.model.patch)

  def step(params, x, given, held, i, text, null, guidance):
    b, t, h, w, ch = x.shape
    tp, hp, wp = t // pt, h // ph, w // pw
    to_tokens = lambda z: (
        z.reshape(b, tp, pt, hp, ph, wp, pw, ch)
        .transpose(0, 1, 3, 5, 2, 4, 6, 7)
        .reshape(b, tp * hp * wp, -1)
    )
    tokens, given_tokens = to_tokens(x), to_tokens(given)
    cond_mask = jnp.broadcast_to(held.reshape(b, tp, pt).all(-1)[:, :, None, None], (b, tp, hp, wp))
    cond_mask = cond_mask.reshape(b, tp * hp * wp)
    # Token coordinates in raster order, from iotas (jnp.indices needs concrete sizes).
    grid = [jax.lax.broadcasted_iota(jnp.int32, (tp, hp, wp), k) for k in range(3)]
    positions = jnp.broadcast_to(jnp.stack(grid, -1).reshape(1, tp * hp * wp, 3), (b, tp * hp * wp, 3))
    segment_ids = jnp.ones((b, tp * hp * wp), jnp.int32)
    shift = resolution_shift(jnp.full((b, 1), tp * hp * wp, jnp.float32), c.diffusion.shift_base_tokens)
    times = objective.sampling_times(steps, shift)  # [steps + 1, b, 1]
    t_now, t_next = times[i], times[i + 1]
    apply = lambda *a: pipe.dit.apply({"params": unflatten(params)}, *a)
    denoise = guided(apply, guidance, segment_ids, positions, cond_mask)
    one_slot = lambda pair: jax.tree.map(lambda a: a[:, None], pair)  # one example per row
    prediction = denoise(tokens, t_now, one_slot(text), one_slot(null))
    tokens = objective.step(tokens, prediction, t_now[..., None], t_next[..., None])
    tokens = jnp.where(cond_mask[..., None], given_tokens, tokens)
    z = tokens.reshape(b, tp, hp, wp, pt, ph, pw, ch).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return z.reshape(b, t, h, w, ch)

  return step


def _decode_fn(pipe):
  from sora_jax.data.latents import destandardise
  from sora_jax.models.vae import decode_chunked

  def decode(params, z):
    return decode_chunked(
        pipe.vae,
        unflatten(params),
        destandardise(z, pipe.latent_stats),
        chunk_latents=pipe.config.sample.chunk_latents,
    )

  return decode


def _encode_fn(frozen):
  """encode(weights named as in the exported text_encoder/ folder, ids) -> embeddings."""
  from sora_jax.models.t5 import hf_key

  shapes = jax.eval_shape(lambda: frozen.module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32)))

  def encode(weights, ids):
    def leaf(path, _):
      names = tuple(p.key for p in path[1:])  # past the "params" collection
      w = weights[hf_key(names)].astype(frozen.dtype)
      return w.T if names[-1] == "kernel" else w

    params = jax.tree_util.tree_map_with_path(leaf, shapes)
    return frozen.module.apply(params, ids)[0].astype(frozen.embed_dtype)

  return encode


def export_serving(pipe, folder, platforms=("cpu", "tpu", "cuda")):
  """Write FOLDER/serving/ for `pipe` (a Pipeline); returns the manifest."""
  from jax import export

  from sora_jax.models.build import frozen_encoder
  from sora_jax.weights import flatten, read_flat

  c, s = pipe.config, pipe.config.sample
  # The cuDNN and splash kernels lower for their own platform only; the reference one for all.
  if c.model.attention_impl != "xla":
    platforms = {"splash": ("tpu",), "cudnn": ("cuda",)}.get(c.model.attention_impl, platforms)
  shape = (1 + (s.num_frames - 1) // VAE_TEMPORAL, s.height // VAE_SPATIAL, s.width // VAE_SPATIAL)
  channels, text_len = c.vae.latent_channels, c.model.text.max_len
  spec = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.asarray(a).dtype), tree)
  dit_weights, vae_weights = spec(flatten(pipe.dit_params)), spec(flatten(pipe.vae_params))
  pt, ph, pw = tuple(c.model.patch)
  frozen = frozen_encoder(c)

  def text_spec(b):
    ids = jax.ShapeDtypeStruct((b, text_len), jnp.int32)
    return ids, (
        None if frozen is None else jax.ShapeDtypeStruct((b, text_len, frozen.dim), frozen.embed_dtype)
    )

  def step_args(b, t, h, w):
    latent = jax.ShapeDtypeStruct((b, t, h, w, channels), jnp.float32)
    return (
        dit_weights,
        latent,
        latent,
        jax.ShapeDtypeStruct((b, t), jnp.bool_),
        jax.ShapeDtypeStruct((), jnp.int32),
        text_spec(b),
        text_spec(b),
        jax.ShapeDtypeStruct((), jnp.float32),
    )

  step = jax.jit(_step_fn(pipe, s.steps))
  b, tp, hp, wp = export.symbolic_shape("b, tp, hp, wp")
  try:  # batch and latent size symbolic (multiples of the patch)
    exported_step = export.export(step, platforms=platforms)(*step_args(b, pt * tp, ph * hp, pw * wp))
    symbolic = ["batch", "latent frames", "latent height", "latent width"]
  except Exception as e:  # noqa: BLE001 - a model whose shapes must be static: batch only
    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    exported_step = export.export(step, platforms=platforms)(*step_args(b, *shape))
    symbolic = ["batch"]
  else:
    reason = None
  decode = jax.jit(_decode_fn(pipe))
  exported_decode = export.export(decode, platforms=platforms)(
      vae_weights, jax.ShapeDtypeStruct((b, *shape, channels), jnp.float32)
  )
  artefacts = [(STEP_FILE, exported_step), (DECODE_FILE, exported_decode)]
  tokenizer = {"kind": "hashed_words", "max_len": text_len, "vocab_size": c.model.text.vocab_size}
  if frozen is not None:  # the encoder reads the export's text_encoder/ weights, by their names
    text_weights = spec(read_flat(os.path.join(folder, "text_encoder"), "model"))
    encode = jax.jit(_encode_fn(frozen))
    artefacts.append((ENCODE_FILE, export.export(encode, platforms=platforms)(text_weights, text_spec(b)[0])))
    tokenizer = {"kind": "t5", "max_len": text_len, "folder": "text_encoder"}
  out = os.path.join(folder, SERVING)
  os.makedirs(out, exist_ok=True)
  for file, exported in artefacts:
    with open(os.path.join(out, file), "wb") as f:
      f.write(exported.serialize())
  manifest = {
      "jax_version": jax.__version__,
      "calling_convention_version": exported_step.calling_convention_version,
      "compatibility": COMPATIBILITY,
      "platforms": list(exported_step.platforms),
      "steps": s.steps,
      "guidance": s.guidance,
      "first_frame": s.first_frame,
      "sample_size": {"num_frames": s.num_frames, "height": s.height, "width": s.width},
      "latent_shape": [*shape, channels],
      "patch": [pt, ph, pw],
      "step_symbolic": symbolic,
      "step_static_reason": reason,
      "decode_symbolic": ["batch"],
      "tokenizer": tokenizer,
      "step_inputs": [str(a) for a in exported_step.in_avals[len(jax.tree.leaves(dit_weights)) :]],
      "decode_output": str(exported_decode.out_avals[0]),
  }
  with open(os.path.join(out, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
  return manifest


class Served:
  """Samples from an export folder's serving artefacts and weights, with no model code."""

  def __init__(self, folder):
    from jax import export

    from sora_jax.export import COMPONENTS, TEXT
    from sora_jax.weights import read_flat

    path = os.path.join(folder, SERVING, MANIFEST)
    if not os.path.isfile(path):
      raise ConfigError(f"{folder}: no {SERVING}/{MANIFEST}; export with --serving")
    with open(path) as f:
      self.manifest = json.load(f)
    try:
      with open(os.path.join(folder, SERVING, STEP_FILE), "rb") as f:
        self.step = export.deserialize(f.read())
      with open(os.path.join(folder, SERVING, DECODE_FILE), "rb") as f:
        self.decode = export.deserialize(f.read())
    except Exception as e:  # noqa: BLE001 - jax raises various errors for an artefact it cannot read
      raise ConfigError(
          f"{folder}/{SERVING}: written by jax {self.manifest['jax_version']}, not loadable by jax "
          f"{jax.__version__} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
      ) from None
    dit = read_flat(os.path.join(folder, "transformer"), COMPONENTS["transformer"][1])
    text = read_flat(os.path.join(folder, TEXT), COMPONENTS[TEXT][1])
    self.vae_weights = read_flat(os.path.join(folder, "vae"), COMPONENTS["vae"][1])
    t = self.manifest["tokenizer"]
    if t["kind"] == "t5":  # a frozen encoder: its own artefact and the export's tokenizer files
      from sora_jax.models.t5 import T5Tokenizer

      with open(os.path.join(folder, SERVING, ENCODE_FILE), "rb") as f:
        encode = export.deserialize(f.read())
      tokenizer = T5Tokenizer(os.path.join(folder, t["folder"]))
      self.tokenize = lambda captions: tokenizer(captions, t["max_len"])
      self.encode = lambda ids: (ids, encode.call(text, ids))
      self.dit_weights = dit
    else:
      from sora_jax.models.text import tokenize

      self.tokenize = lambda captions: tokenize(captions, t["max_len"], t["vocab_size"])
      self.encode = lambda ids: (ids, None)
      self.dit_weights = dit | {f"{TEXT}.{k}": v for k, v in text.items()}

  def _denoise(self, x, given, held, text, guidance):
    null_ids = np.broadcast_to(np.asarray(self.tokenize([""])[0], np.int32), text[0].shape)
    null = self.encode(np.ascontiguousarray(null_ids))
    for i in range(self.manifest["steps"]):
      x = self.step.call(self.dit_weights, x, given, held, np.int32(i), text, null, np.float32(guidance))
    return x

  def sample(self, captions, noise, first_noise=None, guidance=None):
    """captions (B), noise [B, T, h, w, C] -> uint8 videos [B, F, H, W, 3]. With the export's
    two-stage sampling (sample.first_frame "video"), frame 0 comes from a one-pass sample of
    `first_noise` first, then is held while the video is sampled from `noise`."""
    guidance = self.manifest["guidance"] if guidance is None else guidance
    text = self.encode(self.tokenize(captions))
    b, t = noise.shape[:2]
    given, held = np.zeros_like(noise), np.zeros((b, t), bool)
    if self.manifest["first_frame"] == "video" and t > 1:
      first = self._denoise(first_noise, given, held, text, guidance)
      given = np.zeros_like(noise)
      given[:, :1] = np.asarray(first)[:, :1]
      held[:, 0] = True
      noise = np.where(held[:, :, None, None, None], given, noise)
    elif self.manifest["first_frame"] == "image":
      raise ConfigError("serving: sample.first_frame='image' samples frame 0 at another size; not exported")
    z = self._denoise(noise, given, held, text, guidance)
    return to_uint8(self.decode.call(self.vae_weights, z))

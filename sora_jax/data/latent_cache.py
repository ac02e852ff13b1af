"""`sora-jax cache-latents`: prepared clips -> VAE latents in array_record shards, read by grain.

Each clip is resized (keeping its aspect) to fit the DiT's token budget (one packed row), then
encoded once; the DiT then trains from posterior samples of the cached (mean, std). Hosts split
the clips (host i takes clips i, i + P, ...) and each writes its own shard. A dataset's
validation split is encoded the same way into OUTPUT/validation/ (the held-out clips of the
validation loss; training reads OUTPUT's own shards only).

With a frozen text encoder (model.text.kind = t5), each record also holds its captions' ids and
embeddings (16-bit, `model.text.embed_dtype`), and OUTPUT/text_encoder.json the encoder's identity
and the empty caption's (guidance's null caption, and caption dropout's): the DiT then trains
without running the encoder. A run whose encoder differs from the cache's recomputes them.
"""

import functools
import io
import json
from pathlib import Path

import jax
import numpy as np

from sora_jax.data.budget import fit_to_budget
from sora_jax.data.latents import channel_stats, encode_videos, read_stats, write_stats

STATS_FILE = "stats.json"
TEXT_FILE = "text_encoder.json"  # the encoder that wrote the cached embeddings, and the null caption's
VALIDATION_DIR = "validation"


def resize_to_budget(video, budget, patch):
  """uint8 [T, H, W, 3] -> the largest same-aspect, stride-aligned, 1 + 4k clip within budget."""
  frames, h, w = fit_to_budget(*video.shape[:3], budget, patch)
  resized = jax.image.resize(np.asarray(video[:frames], np.float32), (frames, h, w, 3), "linear")
  return np.clip(np.asarray(resized), 0, 255).round().astype(np.uint8)


def _bits(embeds):
  """16-bit floats as their uint16 bits (npz keeps no bfloat16), and back with `_floats`."""
  return np.asarray(embeds).view(np.uint16)


def _floats(bits, dtype):
  import ml_dtypes

  return bits.view(np.dtype(getattr(ml_dtypes, dtype, dtype)))


def _record(mean, std, captions, text=None):
  """captions: the clip's caption, then any generated one; text: their (ids, embeddings)."""
  buffer = io.BytesIO()
  arrays = {"mean": mean, "std": std, "caption": np.array(captions[0]), "captions": np.array(captions)}
  if text is not None:
    arrays |= {"text_ids": text[0], "text_embeds": _bits(text[1])}
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def _unrecord(data, embed_dtype=None):
  with np.load(io.BytesIO(data)) as z:
    record = {"mean": z["mean"], "std": z["std"], "caption": str(z["caption"])}
    # Records written before generated captions hold one caption.
    record["captions"] = [str(c) for c in z["captions"]] if "captions" in z else [record["caption"]]
    if embed_dtype and "text_embeds" in z:
      record["text"] = (z["text_ids"], _floats(z["text_embeds"], embed_dtype))
  return record


def clip_captions(clip):
  """A prepared clip's captions: its own, then the captioner's where `prepare --captioner` wrote one."""
  generated = clip.get("generated_caption", "")
  return [clip["caption"]] + ([generated] if generated else [])


def cache_latents(
    vae,
    vae_params,
    clips,
    output,
    *,
    budget,
    patch,
    stats=True,
    text=None,
    text_identity=None,
    caption_tokens=None,
    max_tokens=None,
):
  """Encode this host's share of `clips` (records with 'video', 'caption') into OUTPUT (and the
  latent statistics of training, with `stats`); with `text` (a FrozenText) also every caption's
  ids and embeddings, and OUTPUT/text_encoder.json (`text_identity` and the null caption's).
  Captions that `caption_tokens(captions)` finds longer than `max_tokens` (the text encoder cuts
  their end) are listed in OUTPUT/truncated_captions-HOST.json; returns (clips, truncated)."""
  from array_record.python.array_record_module import ArrayRecordWriter

  output = Path(output)
  output.mkdir(parents=True, exist_ok=True)
  mine = range(jax.process_index(), len(clips), jax.process_count())
  records = [clips[i] for i in mine]
  videos = [resize_to_budget(r["video"], budget, patch) for r in records]
  latents = encode_videos(vae, vae_params, videos)
  shard = output / f"latents-{jax.process_index():05d}.array_record"
  writer = ArrayRecordWriter(str(shard) + ".tmp", "group_size:1")
  truncated = []
  for (mean, std), r in zip(latents, records):
    captions = clip_captions(r)
    for caption, tokens in zip(captions, caption_tokens(captions) if caption_tokens else ()):
      if tokens > max_tokens:
        truncated.append(
            {"source": r.get("source"), "start": r.get("start"), "tokens": tokens, "caption": caption}
        )
    encoded = None
    if text is not None:
      ids = text.ids(captions)
      encoded = (ids, np.asarray(text.embed(ids)))
    writer.write(_record(mean, std, captions, encoded))
  writer.close()
  shard.with_name(shard.name + ".tmp").rename(shard)
  if jax.process_index() == 0:
    if stats:  # stats from host 0's share: a large random sample of the data
      write_stats(output / STATS_FILE, channel_stats(latents), clips=len(clips))
    if text is not None:
      null = text.ids([""])
      np.savez(output / "null_text.npz", text_ids=null[0], text_embeds=_bits(np.asarray(text.embed(null))[0]))
      with open(output / TEXT_FILE, "w") as f:
        json.dump(text_identity, f, indent=1)
  if truncated:
    with open(output / f"truncated_captions-{jax.process_index():05d}.json", "w") as f:
      json.dump({"max_tokens": max_tokens, "count": len(truncated), "captions": truncated}, f, indent=1)
  return len(records), len(truncated)


def cached_text(path, identity):
  """The cache's null caption (ids, embeddings) if PATH holds embeddings of the encoder
  `identity` (frozen_text.identity of the run's), else None: the run computes them itself."""
  path = Path(path)
  if identity is None or not (path / TEXT_FILE).is_file():
    return None
  with open(path / TEXT_FILE) as f:
    if json.load(f) != identity:
      return None
  with np.load(path / "null_text.npz") as z:
    return z["text_ids"], _floats(z["text_embeds"], identity["embed_dtype"])


def latent_source(path, embed_dtype=None):
  """A random-access grain source of cached latents ({'mean', 'std', 'caption', 'captions'},
  and 'text': (ids, embeddings) of the captions when `embed_dtype` names their dtype)."""
  import grain

  shards = [str(p) for p in sorted(Path(path).glob("latents-*.array_record"))]
  if not shards:
    raise FileNotFoundError(f"{path}: no latents-*.array_record shards; run `sora-jax cache-latents`")
  source = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shards))
  return source.map(functools.partial(_unrecord, embed_dtype=embed_dtype))


class LatentRecords:
  """The DiT's training data from real clips: index -> (mean, std) latents and caption. Each
  record is read (or encoded) once while in use: a batch reads an example's latents, then its
  caption, and waiting examples are rebuilt in the next batch.

  A clip with a generated caption (`prepare --captioner`) trains on it with probability
  `generated_share`, else on its own. `null` is the cached null caption's (ids, embeddings),
  when the records hold embeddings this run can use."""

  def __init__(self, read, length, stats=None, generated_share=0.0, null=None):
    self.read = functools.lru_cache(maxsize=1024)(read)
    self.length = length
    self.stats = stats
    self.generated_share = generated_share
    self.null = null

  def __len__(self):
    return self.length

  def __getitem__(self, i):
    r = self.read(i)
    return r["mean"], r["std"]

  def caption_at(self, i, rng):
    captions = self.read(i)["captions"]
    if len(captions) > 1 and self.generated_share and rng.random() < self.generated_share:
      return captions[1]
    return captions[0]

  def cached_text(self, i, caption):
    """(ids, embeddings) cached for clip i's `caption` (or the null caption), else None."""
    if self.null is None:
      return None
    if caption == "":
      return self.null
    r = self.read(i)
    k = r["captions"].index(caption)
    return r["text"][0][k], r["text"][1][k]


def cached_latents(path, generated_share=0.0, text_identity=None):
  """`sora-jax cache-latents` output (config.data.latents); its caption embeddings are used
  when written by the encoder `text_identity` (the run's)."""
  null = cached_text(path, text_identity)
  source = latent_source(path, text_identity["embed_dtype"] if null is not None else None)
  return LatentRecords(
      source.__getitem__, len(source), read_stats(Path(path) / STATS_FILE), generated_share, null
  )


def encoded_clips(path, vae, vae_params, *, budget, patch, stats_clips=64, generated_share=0.0):
  """`sora-jax prepare` output (config.data.clips), each clip resized to the token budget and
  encoded by the run's VAE when first read, as `cache-latents` would have written it: training
  straight from raw data. The latent stats come from the first `stats_clips` clips (the same on
  every host)."""
  from sora_jax.data.prepare import clip_source

  clips = clip_source(path)
  # Hosts encode different clips at different times: a local copy of the (replicated) VAE
  # params keeps each encode on this host, with no collective across processes.
  local = jax.tree.map(
      lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, vae_params
  )

  def read(i):
    clip = clips[i]
    ((mean, std),) = encode_videos(vae, local, [resize_to_budget(clip["video"], budget, patch)], batch_size=1)
    return {"mean": mean, "std": std, "caption": clip["caption"], "captions": clip_captions(clip)}

  records = LatentRecords(read, len(clips), generated_share=generated_share)
  records.stats = channel_stats([records[i] for i in range(min(stats_clips, len(records)))])
  return records

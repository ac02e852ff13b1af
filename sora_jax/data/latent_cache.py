"""`sora-jax cache-latents`: prepared clips -> VAE latents in array_record shards, read by grain.

Each clip is resized (keeping its aspect) to fit the DiT's token budget (one packed row), then
encoded once; the DiT then trains from posterior samples of the cached (mean, std). Hosts split
the clips (host i takes clips i, i + P, ...) and each writes its own shard. A dataset's
validation split is encoded the same way into OUTPUT/validation/ (the held-out clips of the
validation loss; training reads OUTPUT's own shards only).
"""

import functools
import io
from pathlib import Path

import jax
import numpy as np

from sora_jax.data.budget import fit_to_budget
from sora_jax.data.latents import channel_stats, encode_videos, read_stats, write_stats

STATS_FILE = "stats.json"
VALIDATION_DIR = "validation"


def resize_to_budget(video, budget, patch):
  """uint8 [T, H, W, 3] -> the largest same-aspect, stride-aligned, 1 + 4k clip within budget."""
  frames, h, w = fit_to_budget(*video.shape[:3], budget, patch)
  resized = jax.image.resize(np.asarray(video[:frames], np.float32), (frames, h, w, 3), "linear")
  return np.clip(np.asarray(resized), 0, 255).round().astype(np.uint8)


def _record(mean, std, caption):
  buffer = io.BytesIO()
  np.savez(buffer, mean=mean, std=std, caption=np.array(caption))
  return buffer.getvalue()


def _unrecord(data):
  with np.load(io.BytesIO(data)) as z:
    return {"mean": z["mean"], "std": z["std"], "caption": str(z["caption"])}


def cache_latents(vae, vae_params, clips, output, *, budget, patch, stats=True):
  """Encode this host's share of `clips` (records with 'video', 'caption') into OUTPUT (and the
  latent statistics of training, with `stats`)."""
  from array_record.python.array_record_module import ArrayRecordWriter

  output = Path(output)
  output.mkdir(parents=True, exist_ok=True)
  mine = range(jax.process_index(), len(clips), jax.process_count())
  records = [clips[i] for i in mine]
  videos = [resize_to_budget(r["video"], budget, patch) for r in records]
  latents = encode_videos(vae, vae_params, videos)
  shard = output / f"latents-{jax.process_index():05d}.array_record"
  writer = ArrayRecordWriter(str(shard) + ".tmp", "group_size:1")
  for (mean, std), r in zip(latents, records):
    writer.write(_record(mean, std, r["caption"]))
  writer.close()
  shard.with_name(shard.name + ".tmp").rename(shard)
  if stats and jax.process_index() == 0:  # stats from host 0's share: a large random sample of the data
    write_stats(output / STATS_FILE, channel_stats(latents), clips=len(clips))
  return len(records)


def latent_source(path):
  """A random-access grain source of cached latents ({'mean', 'std', 'caption'})."""
  import grain

  shards = [str(p) for p in sorted(Path(path).glob("latents-*.array_record"))]
  if not shards:
    raise FileNotFoundError(f"{path}: no latents-*.array_record shards; run `sora-jax cache-latents`")
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shards)).map(_unrecord)


class LatentRecords:
  """The DiT's training data from real clips: index -> (mean, std) latents and caption. Each
  record is read (or encoded) once while in use: a batch reads an example's latents, then its
  caption, and waiting examples are rebuilt in the next batch."""

  def __init__(self, read, length, stats=None):
    self.read = functools.lru_cache(maxsize=1024)(read)
    self.length = length
    self.stats = stats

  def __len__(self):
    return self.length

  def __getitem__(self, i):
    r = self.read(i)
    return r["mean"], r["std"]

  def caption_at(self, i, rng):
    return self.read(i)["caption"]


def cached_latents(path):
  """`sora-jax cache-latents` output (config.data.latents)."""
  source = latent_source(path)
  return LatentRecords(source.__getitem__, len(source), read_stats(Path(path) / STATS_FILE))


def encoded_clips(path, vae, vae_params, *, budget, patch, stats_clips=64):
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
    return {"mean": mean, "std": std, "caption": clip["caption"]}

  records = LatentRecords(read, len(clips))
  records.stats = channel_stats([records[i] for i in range(min(stats_clips, len(records)))])
  return records

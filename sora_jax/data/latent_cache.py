"""`sora-jax cache-latents`: prepared clips -> VAE latents in array_record shards, read by grain.

Each clip is resized (keeping its aspect) to fit the DiT's token budget (one packed row), then
encoded once; the DiT then trains from posterior samples of the cached (mean, std). Hosts split
the clips (host i takes clips i, i + P, ...) and each writes its own shard.
"""
import io
from pathlib import Path

import jax
import numpy as np

from sora_jax.data.budget import fit_to_budget
from sora_jax.data.latents import channel_stats, encode_videos
from sora_jax.files import write_json

STATS_FILE = "stats.json"


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


def cache_latents(vae, vae_params, clips, output, *, budget, patch):
  """Encode this host's share of `clips` (records with 'video', 'caption') into OUTPUT."""
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
  if jax.process_index() == 0:  # stats from host 0's share: a large random sample of the data
    mean, std = channel_stats(latents)
    write_json(output / STATS_FILE, {"mean": mean.tolist(), "std": std.tolist(), "clips": len(clips)})
  return len(records)


def latent_source(path):
  """A random-access grain source of cached latents ({'mean', 'std', 'caption'})."""
  import grain
  shards = [str(p) for p in sorted(Path(path).glob("latents-*.array_record"))]
  if not shards:
    raise FileNotFoundError(f"{path}: no latents-*.array_record shards; run `sora-jax cache-latents`")
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shards)).map(_unrecord)


def load_stats(path):
  import json
  stats = json.loads((Path(path) / STATS_FILE).read_text())
  return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)

"""Trajectories for Tora-style motion control, from a user's points to the DiT's motion tokens.

  traj.json: {"trajectories": [[[x, y], ...], ...]} (or the list alone, or one list of points),
  pixel coordinates of the output, x to the right and y down
    -> tracks: each interpolated to one (y, x) centre per frame (`read_trajectories`)
    -> displacement maps [T, H, W, 3]: on frame t the move p[t+1] - p[t], written around p[t]
       (the move's previous position) with a peak-normalised Gaussian, and that Gaussian as a
       presence channel (`displacement_maps`)
    -> motion tokens [n, D] on the DiT's token grid, by one of two extractors (`motion_tokens`):
       "vae": the maps as a flow-coloured video (`flow_video`) encoded by the frozen video VAE,
       as Tora does, then patchified like the latents; "conv": the maps themselves, average
       pooled and cut into each token's causal pixel volume (the frames of its latent group:
       frame 0 alone, then 4 at a time), the input of a learned strided causal 3D conv (kernel =
       stride = that volume, models/motion.py's first layer).

Training draws, per example, the shape's dense flow (every pixel of the shape moves: Tora's first
stage, optical flow) or its centroid's track alone (the second stage, sparse trajectories).
"""

import json

import numpy as np

from sora_jax.config import VAE_SPATIAL, VAE_TEMPORAL, ConfigError
from sora_jax.models.patch import patchify

EXTRACTORS = ("vae", "conv")
# Displacements are given in units of this fraction of min(H, W) per frame: a quick shapes move
# (0.034) is about 0.7, so the maps and their tokens are O(1).
MOTION_UNIT = 0.05
# Map channels: the move (dy, dx) and presence. A point at rest moves nowhere, so its move alone
# says nothing of where it is (Tora's maps are the move alone): presence keeps it placed.
CHANNELS = 3
POOL = 4  # the conv extractor's average pooling of the maps (of the 8 pixels a latent spans)
_FLOW_SATURATION = 1.5  # flow video: a move of this many units (3.6 px a frame at 48) is fully saturated


def interpolate(points, num_frames):
  """(y, x) points [n, 2] -> [num_frames, 2]: the points spread evenly over the frames (the first
  at frame 0, the last at the last frame), linear between them."""
  points = np.asarray(points, np.float64)
  at = np.linspace(0.0, num_frames - 1, len(points))
  frames = np.arange(num_frames, dtype=np.float64)
  return np.stack([np.interp(frames, at, points[:, k]) for k in range(2)], -1).astype(np.float32)


def read_trajectories(path, num_frames, height, width):
  """traj.json -> tracks, each float32 [num_frames, 2] (y, x); one line naming the problem for a
  file that is not such JSON, a track under 2 points, or a point outside the frame."""
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as e:
    raise ConfigError(f"--trajectory={path}: cannot read it ({e.strerror})") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"--trajectory={path}: not JSON ({e})") from None
  if isinstance(data, dict):
    if "trajectories" not in data:
      raise ConfigError(f'--trajectory={path}: no "trajectories" key (a list of [[x, y], ...] point lists)')
    data = data["trajectories"]
  if isinstance(data, list) and data and _is_point(data[0]):
    data = [data]  # one trajectory given as its point list
  if not isinstance(data, list) or not data:
    raise ConfigError(f"--trajectory={path}: give a non-empty list of trajectories, each [[x, y], ...]")
  tracks = []
  for i, points in enumerate(data):
    if not isinstance(points, list) or not all(_is_point(p) for p in points):
      raise ConfigError(f"--trajectory={path}: trajectory {i} is not a list of [x, y] number pairs")
    if len(points) < 2:
      raise ConfigError(
          f"--trajectory={path}: trajectory {i} has {len(points)} point(s); it needs at least 2"
      )
    xy = np.asarray(points, np.float64)
    outside = np.flatnonzero(
        (xy[:, 0] < 0) | (xy[:, 0] > width - 1) | (xy[:, 1] < 0) | (xy[:, 1] > height - 1)
    )
    if outside.size:
      x, y = points[outside[0]]
      raise ConfigError(
          f"--trajectory={path}: trajectory {i} point {outside[0]} (x={x}, y={y}) lies outside the "
          f"{width}x{height} frame (x in [0, {width - 1}], y in [0, {height - 1}])"
      )
    tracks.append(interpolate(xy[:, ::-1], num_frames))
  return tracks


def _is_point(p):
  return (
      isinstance(p, (list, tuple))
      and len(p) == 2
      and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
  )


def moves(track):
  """A track's move out of each frame, [T, 2]: p[t+1] - p[t] (the optical-flow convention: frame
  t's flow leads to frame t + 1, at where the point is on frame t), the last frame repeating the
  move into it; zeros for a single frame. Each frame's map so marks where the point is, frame 0
  included."""
  track = np.asarray(track, np.float32)
  step = np.diff(track, axis=0)
  return np.concatenate([step, step[-1:]]) if len(step) else np.zeros_like(track)


def displacement_maps(tracks, height, width, sigma):
  """Tracks (each [T, 2], (y, x) pixels) -> float32 [T, H, W, 3]: (dy, dx) in MOTION_UNITs, on frame
  t each track's move out of it (`moves`), spread around its point p[t] (the move's previous
  position) by a Gaussian of peak 1 and std sigma x min(H, W), tracks adding up; and presence,
  that Gaussian itself (the largest over tracks): where a point is even when it does not move."""
  size = min(height, width)
  num_frames = len(tracks[0]) if tracks else 1
  maps = np.zeros((num_frames, height, width, CHANNELS), np.float32)
  y, x = np.mgrid[:height, :width].astype(np.float32)
  for track in tracks:
    for t, ((py, px), move) in enumerate(zip(np.asarray(track, np.float32), moves(track))):
      spread = np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * (sigma * size) ** 2))
      maps[t, ..., :2] += spread[..., None] * (move / (MOTION_UNIT * size))
      maps[t, ..., 2] = np.maximum(maps[t, ..., 2], spread)
  return maps


def dense_maps(masks, track):
  """The dense flow of one moving shape: on frame t its move out of it (`moves`, MOTION_UNITs) and
  presence 1 on every pixel of its mask there. masks: bool [T, H, W]; track: [T, 2] (y, x)."""
  size = min(masks.shape[1:])
  maps = np.zeros(masks.shape + (CHANNELS,), np.float32)
  for t, move in enumerate(moves(track)):
    maps[t][masks[t]] = (*(move / (MOTION_UNIT * size)), 1.0)
  return maps


def flow_video(maps):
  """Maps [T, H, W, 3] -> uint8 [T, H, W, 3]: hue the direction, saturation the speed (white: no
  move), the flow colouring Tora gives its VAE, darkened to half where a point is (presence)."""
  dy, dx = maps[..., 0], maps[..., 1]
  hue = (np.arctan2(-dy, dx) / (2 * np.pi)) % 1.0
  sat = np.clip(np.hypot(dy, dx) / _FLOW_SATURATION, 0.0, 1.0)
  # HSV -> RGB at value 1: each channel 1 - sat * clip(2 - |hue sector distance|, 0, 1).
  k = (np.array([5.0, 3.0, 1.0]) + hue[..., None] * 6.0) % 6.0
  rgb = 1.0 - sat[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
  rgb *= 1.0 - 0.5 * maps[..., 2:3]
  return (rgb * 255.0).round().astype(np.uint8)


def conv_tokens(maps, patch):
  """Maps [T, H, W, 3] -> [n, D]: each token's causal pixel volume of the maps (its latent
  group's frames, frame 0's group padded in front with 3 still frames; average pooled POOL x
  POOL), flattened in patchify's token order."""
  pt, ph, pw = patch
  t, h, w, _ = maps.shape
  frames = np.concatenate([np.zeros((VAE_TEMPORAL - 1, h, w, CHANNELS), np.float32), maps])
  pooled = frames.reshape(len(frames), h // POOL, POOL, w // POOL, POOL, CHANNELS).mean((2, 4))
  return patchify(pooled, (VAE_TEMPORAL * pt, VAE_SPATIAL * ph // POOL, VAE_SPATIAL * pw // POOL))


def motion_dim(config):
  """Features per motion token of the config's extractor."""
  pt, ph, pw = config.model.patch
  if config.adapter.extractor == "vae":
    return pt * ph * pw * config.vae.latent_channels
  return VAE_TEMPORAL * pt * (VAE_SPATIAL * ph // POOL) * (VAE_SPATIAL * pw // POOL) * CHANNELS


def motion_tokens(maps_list, extractor, patch, encode):
  """Motion tokens [n_i, motion_dim] of each maps [T_i, H_i, W_i, 3]. encode(videos) -> their
  standardised latents (the frozen VAE; "vae" only), batched by the caller's choice."""
  if extractor == "conv":
    return [conv_tokens(m, patch) for m in maps_list]
  if extractor == "vae":
    return [patchify(z, patch).astype(np.float32) for z in encode([flow_video(m) for m in maps_list])]
  raise ConfigError(f"adapter.extractor={extractor!r}; choose from {EXTRACTORS}")


def request_motion(tora, config, request, num_tokens, encode):
  """A sampling request's motion tokens [num_tokens, Dm] for a DiT with the Tora adapter `tora`
  (adapters.Tora): its trajectories' (`request.trajectories`), or zeros without any (the base's
  behaviour exactly); None for a DiT without one, which refuses a trajectory."""
  if tora is None:
    if request.trajectories:
      raise ConfigError(
          "a trajectory needs a Tora adapter: add --adapter=DIR of a `sora-jax finetune "
          "--config=configs/finetune/tora.py` run (or sample its export)"
      )
    return None
  if not request.trajectories:
    return np.zeros((num_tokens, motion_dim(config)), np.float32)
  for track in request.trajectories:
    if len(track) != request.num_frames:
      raise ConfigError(
          f"a trajectory of {len(track)} points for {request.num_frames} frames: give one per frame"
      )
  maps = displacement_maps(request.trajectories, request.height, request.width, tora.sigma)
  (tokens,) = motion_tokens([maps], tora.extractor, tuple(config.model.patch), encode)
  return tokens


def draw_tracks(video, tracks):
  """uint8 [T, H, W, 3] with each asked track drawn on it: the whole path as grey dots and, on
  frame t, the point asked for then as a white ring (a person sees whether it is followed)."""
  video = np.array(video)
  t_count, h, w, _ = video.shape
  y, x = np.mgrid[:h, :w]
  for track in tracks:
    dense = interpolate(track, 8 * len(track))  # dots close enough to read as a line
    iy = np.clip(np.rint(dense[:, 0]).astype(int), 0, h - 1)
    ix = np.clip(np.rint(dense[:, 1]).astype(int), 0, w - 1)
    video[:, iy, ix] = (video[:, iy, ix] // 2 + 64).astype(np.uint8)
    for t in range(t_count):
      py, px = track[min(t, len(track) - 1)]
      ring = np.abs(np.hypot(y - py, x - px) - max(2.0, 0.04 * min(h, w))) < 0.6
      video[t][ring] = 255
  return video

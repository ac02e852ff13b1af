"""Read back colour, motion direction and shape from a generated "moving shapes" video.

Used to score a model on the held-out (colour, shape, direction) prompts of
`sora_jax.data.synthetic`: did it draw the asked colour, move it the asked way, and
draw the asked shape?
"""

from __future__ import annotations

import numpy as np

from sora_jax.data.synthetic import (
    COLOURS,
    DIRECTION_PHRASES,
    DIRECTIONS,
    HELD_OUT,
    NEW_COLOURS,
    SHAPES,
    make_spec,
    render,
)

_NAMES = list(COLOURS)  # the palette read back, unless a call names another (with NEW_COLOURS)


def palette(colours=()):
  """The palette names to read back videos that may show `colours` (new ones appended)."""
  return _NAMES + [c for c in colours if c not in COLOURS]


def _chroma(names):
  """Palette colours scaled so their brightest channel is 1: matching on this chromaticity
  tolerates the darkening that blur / a VAE cause at shape edges."""
  table = np.array([(COLOURS | NEW_COLOURS)[n] for n in names], np.float32)
  return table / table.max(axis=1, keepdims=True)


_CHROMA = _chroma(_NAMES)
_MIN_BRIGHTNESS = 110  # backgrounds stay <= ~90 in every channel
_MAX_CHROMA_DIST = 0.4
_CORE_FRACTION = 0.6
_MIN_PIXELS = 4  # fewer pixels in a frame: no centroid / shape estimate there
_MIN_DISPLACEMENT = 0.04  # of min(H, W); below it the video counts as static
_UNIT = {k: np.asarray(v) for k, v in DIRECTIONS.items()}


def detect_colours(video: np.ndarray, names: list[str] = _NAMES) -> np.ndarray:
  """Index in `names` (the palette) per pixel, int [T, H, W]; -1 for background / unrecognised."""
  v = _as_uint8_range(video)
  bright = v.max(axis=-1)
  chroma = v / np.maximum(bright, 1.0)[..., None]
  dist = np.linalg.norm(chroma[..., None, :] - (_CHROMA if names is _NAMES else _chroma(names)), axis=-1)
  idx = dist.argmin(axis=-1)
  ok = (bright >= _MIN_BRIGHTNESS) & (np.take_along_axis(dist, idx[..., None], -1)[..., 0] < _MAX_CHROMA_DIST)
  return np.where(ok, idx, -1)


def _as_uint8_range(video: np.ndarray) -> np.ndarray:
  """float32 [T, H, W, 3] in [0, 255]; float input is taken to be in [0, 1]."""
  video = np.asarray(video)
  if np.issubdtype(video.dtype, np.floating):
    return np.clip(video, 0.0, 1.0).astype(np.float32) * 255.0
  return video.astype(np.float32)


def analyse_video(
    video: np.ndarray, colour: str, direction: str, shape: str | None = None, names: list[str] = _NAMES
) -> dict:
  """What the video shows, compared with the asked colour / direction / (optional) shape;
  colours are read back in the palette `names` (`palette()`)."""
  labels = detect_colours(video, names)
  num_frames, height, width = labels.shape
  dominant = dominant_colour(labels, names)

  mask = labels == names.index(colour)
  brightness = _as_uint8_range(video).max(axis=-1)
  track = centroids(mask)
  shape_scores = []
  for t in np.nonzero(~np.isnan(track[:, 0]))[0]:
    m = mask[t]
    # Outline at ~half maximum: blurred fringes (caught by the low detection threshold)
    # would otherwise round off a small square's corners.
    core = m & (brightness[t] >= _CORE_FRACTION * brightness[t][m].max())
    ys, xs = np.nonzero(core)
    shape_scores.append(_shape_iou(core[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]))
  est_direction = direction_of(track, min(height, width))

  est_shape = SHAPES[int(np.mean(shape_scores, axis=0).argmax())] if shape_scores else None
  return {
      "dominant_colour": dominant,
      "colour_ok": dominant == colour,
      "track": track,
      "direction": est_direction,
      "direction_ok": est_direction == direction,
      "shape": est_shape,
      "shape_ok": None if shape is None else est_shape == shape,
  }


def dominant_colour(labels: np.ndarray, names: list[str] = _NAMES) -> str | None:
  """The palette colour most pixels show (labels: `detect_colours`'), None where none is seen."""
  counts = np.bincount(labels[labels >= 0], minlength=len(names))
  return names[int(counts.argmax())] if counts.any() else None


# A zoom-in scales the shape by this much over the video or more: the geometric midpoint of no
# zoom (1) and synthetic.CAMERAS["zoom_in"] over 17 frames (1.5), as generated shapes' sizes
# wander (the 3000-step factorized base's samples: 0.66 to 1.39, 10th to 90th percentile).
_ZOOM_SCALE_GROWTH = 1.5**0.5
_MIN_SPREADS = 4  # fewer measured (frame, axis) spreads: no estimate
_MIN_SPAN = 0.5  # of the video: measured frames closer together than this give no estimate


def camera_of(video: np.ndarray, colour: str, names: list[str] = _NAMES) -> str | None:
  """The camera motion the video shows: "zoom_in" when the `colour` shape grows by
  _ZOOM_SCALE_GROWTH or more over the video (`scale_growth`), else None."""
  return camera_from_growth(colour_growth(video, colour, names))


def colour_growth(video: np.ndarray, colour: str, names: list[str] = _NAMES) -> float | None:
  """`scale_growth` of the `colour` shape in `video` (palette `names`)."""
  return scale_growth(detect_colours(video, names) == names.index(colour))


def camera_from_growth(growth: float | None) -> str | None:
  """`camera_of`'s decision from a `scale_growth` (None: no estimate, no camera motion seen)."""
  return "zoom_in" if growth is not None and growth >= _ZOOM_SCALE_GROWTH else None


def spreads(mask: np.ndarray) -> np.ndarray:
  """The shape's spread per frame along y and x (the std of its pixels' coordinates, + 0.5 for a
  pixel's own width), float [T, 2]; NaN along an axis where the mask touches that axis's frame
  edges (a zoom pushes shapes out of the frame, and a clipped shape's spread shrinks) or has
  under _MIN_PIXELS pixels."""
  mask = mask.astype(np.float64)
  count = mask.sum(axis=(1, 2))
  out = np.full((len(mask), 2), np.nan)
  for axis, profile in enumerate((mask.sum(axis=2), mask.sum(axis=1))):  # pixels per row, per column
    at = np.arange(profile.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
      mean = (profile * at).sum(1) / count
      var = (profile * (at - mean[:, None]) ** 2).sum(1) / count
    ok = (count >= _MIN_PIXELS) & (profile[:, 0] == 0) & (profile[:, -1] == 0)
    out[ok, axis] = np.sqrt(var[ok]) + 0.5
  return out


def scale_growth(mask: np.ndarray) -> float | None:
  """How much the shape in `mask` [T, H, W] grows over the video (its linear size on the last
  frame over the first): a line fitted to log `spreads` against the frame index, y and x pooled
  with an intercept each. Reads the scale whether or not the shape is clipped on some frames,
  where its visible area would not; None without _MIN_SPREADS spreads spanning half the frames."""
  s = spreads(mask)
  frame, axis = np.nonzero(~np.isnan(s))
  if len(frame) < _MIN_SPREADS or np.ptp(frame) < _MIN_SPAN * (len(s) - 1):
    return None
  design = np.stack([frame, axis == 0, axis == 1], 1).astype(np.float64)
  slope = np.linalg.lstsq(design, np.log(s[frame, axis]), rcond=None)[0][0]
  return float(np.exp(slope * (len(s) - 1)))


def centroids(mask: np.ndarray) -> np.ndarray:
  """Centroid (y, x) per frame of a bool mask [T, H, W], float [T, 2]; NaN in frames with
  fewer than _MIN_PIXELS pixels (no estimate there)."""
  count = mask.sum(axis=(1, 2))
  ys, xs = np.indices(mask.shape[1:])
  with np.errstate(invalid="ignore", divide="ignore"):
    track = np.stack([(mask * ys).sum(axis=(1, 2)), (mask * xs).sum(axis=(1, 2))], -1) / count[:, None]
  track[count < _MIN_PIXELS] = np.nan
  return track.astype(np.float32)


def direction_of(track: np.ndarray, size: int) -> str | None:
  """The direction a track [T, 2] (NaN where unseen) moves: a linear fit of its centroids;
  None under _MIN_DISPLACEMENT * size over its length (a still video)."""
  valid = ~np.isnan(track[:, 0])
  if valid.sum() < 2:
    return None
  slope = np.polyfit(np.nonzero(valid)[0], track[valid], 1)[0]  # (dy, dx) per frame
  disp = slope * (len(track) - 1)
  if np.linalg.norm(disp) < _MIN_DISPLACEMENT * size:
    return None
  return max(_UNIT, key=lambda k: float(_UNIT[k] @ disp))


def _shape_iou(crop: np.ndarray) -> np.ndarray:
  """IoU of a mask cropped to its bounding box with each of SHAPES drawn in that box.

  More robust to blurred edges than the bare fill ratio (square 1, circle pi/4,
  triangle 1/2): blur grows the box and rounds corners, which shifts the fill ratio
  of small shapes across the decision boundaries but barely moves the IoUs.
  """
  h, w = crop.shape
  y = ((np.arange(h) + 0.5) / h * 2 - 1)[:, None]  # box coordinates in [-1, 1]
  x = ((np.arange(w) + 0.5) / w * 2 - 1)[None, :]
  templates = {
      "circle": y**2 + x**2 <= 1,
      "square": np.ones((h, w), bool),
      "triangle": np.abs(x) <= (y + 1) / 2,  # apex up, as synthetic.render draws it
  }
  return np.array([(crop & templates[s]).sum() / (crop | templates[s]).sum() for s in SHAPES])


def short_caption(colour: str, shape: str, direction: str) -> str:
  """Caption without the optional speed / background clauses (also a training form)."""
  return f"a {colour} {shape} moves {DIRECTION_PHRASES[direction]}"


def eval_prompts(num_frames: int = 17, height: int = 48, width: int = 48) -> list[dict]:
  """The fixed evaluation set: one prompt per held-out (colour, shape, direction)."""
  return [
      {
          "colour": c,
          "shape": s,
          "direction": d,
          "caption": short_caption(c, s, d),
          "num_frames": num_frames,
          "height": height,
          "width": width,
      }
      for c, s, d in HELD_OUT
  ]


def true_spec(
    prompt: dict,
    index: int,
    colour: str | None = None,
    *,
    num_frames: int | None = None,
    speed: str = "quickly",
):
  """The spec of eval prompt `index`'s true video: its track centred, at the quick speed unless
  `speed`, optionally in another colour or of another length."""
  return make_spec(
      colour or prompt["colour"],
      prompt["shape"],
      prompt["direction"],
      num_frames=num_frames or prompt["num_frames"],
      height=prompt["height"],
      width=prompt["width"],
      speed=speed,
      seed=index,
  )


def true_clip(prompt: dict, index: int, colour: str | None = None, **kwargs) -> np.ndarray:
  """The true video of eval prompt `index` (`true_spec`): uint8 [T, H, W, 3]."""
  return render(true_spec(prompt, index, colour, **kwargs))


def opening_frames(prompts: list[dict]) -> list[np.ndarray]:
  """Frame 0 of each prompt's true video: uint8 [H, W, 3]."""
  return [true_clip(p, i)[0] for i, p in enumerate(prompts)]


def summarise(results: list[dict]) -> dict:
  """Accuracy of each attribute over `analyse_video` results."""

  def acc(key):
    vals = [r[key] for r in results if r[key] is not None]
    return float(np.mean(vals)) if vals else float("nan")

  return {
      "colour_accuracy": acc("colour_ok"),
      "direction_accuracy": acc("direction_ok"),
      "shape_accuracy": acc("shape_ok"),
      "n": len(results),
  }


def trajectory_error(video: np.ndarray, colour: str, track: np.ndarray, names: list[str] = _NAMES):
  """Tora's TrajError with this module's tracker in place of CoTracker: the mean, over the frames
  where the `colour` shape is seen, of the distance from its centroid to the asked point (track
  [T, 2], (y, x) pixels), as a fraction of min(H, W); and the share of frames it is seen in.
  (nan, 0.0) where it is never seen."""
  seen = centroids(detect_colours(video, names) == names.index(colour))
  ok = ~np.isnan(seen[:, 0])
  if not ok.any():
    return float("nan"), 0.0
  size = min(np.shape(video)[1:3])
  distance = np.linalg.norm(seen[ok] - np.asarray(track, np.float32)[ok], axis=-1)
  return float(distance.mean() / size), float(ok.mean())

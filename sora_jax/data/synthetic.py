"""Procedural "moving shapes" videos with captions, deterministic by seed (no files).

A video is one coloured shape moving in a straight line at constant speed over a dark
background, optionally filmed by a moving camera (`CAMERAS`: a zoom the captions never name, the
motion a MotionLoRA learns), or moving along a curved or piecewise path (`TRACKS`: the paths a
Tora adapter learns to follow; their captions name no direction). Colours are saturated and backgrounds dark and grey-ish, so the evaluator
(`sora_jax.evaluation.shapes`) can read back colour, motion and shape from pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 30, 30),
    "green": (40, 210, 40),
    "blue": (40, 80, 255),
    "yellow": (255, 235, 20),
    "magenta": (230, 40, 230),
    "cyan": (30, 220, 230),
    "white": (245, 245, 245),
    "orange": (255, 140, 0),
}
# Colours no base run draws (sample_spec takes COLOURS unless told): words a LoRA can teach
# (configs/finetune/new_colour.py). Violet's chromaticity is 0.4 or more from every colour above.
NEW_COLOURS: dict[str, tuple[int, int, int]] = {"violet": (150, 50, 255)}
SHAPES = ("circle", "square", "triangle")
_S = float(np.sqrt(0.5))
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit (dy, dx), y pointing down
    "right": (0.0, 1.0),
    "left": (0.0, -1.0),
    "up": (-1.0, 0.0),
    "down": (1.0, 0.0),
    "up-right": (-_S, _S),
    "up-left": (-_S, -_S),
    "down-right": (_S, _S),
    "down-left": (_S, -_S),
}
DIRECTION_PHRASES = {
    "right": "to the right",
    "left": "to the left",
    "up": "up",
    "down": "down",
    "up-right": "up and to the right",
    "up-left": "up and to the left",
    "down-right": "down and to the right",
    "down-left": "down and to the left",
}
# Displacement per frame as a fraction of min(H, W). "quickly" is the largest speed for
# which a 17-frame track plus a 0.2*min(H, W) radius still fits in a 32-pixel side.
SPEEDS: dict[str, float] = {"slowly": 0.017, "quickly": 0.034}
BACKGROUNDS = ("plain", "textured")
# Camera motions: the whole frame scaled about its centre by this factor per frame (1.5x over 17
# frames), shape and background alike.
CAMERAS: dict[str, float] = {"zoom_in": 1.5 ** (1 / 16)}
# How a shape travels: "line" (a direction and speed the caption names) or a path the caption does
# not name (Tora's training tracks, `curved_path`): a cubic Bezier curve, a zig-zag through random
# corners, an arc of a circle, a line with a stop.
TRACKS = ("line", "bezier", "zigzag", "circle", "stop")
# Dark, low-saturation tints (every channel <= 90): never confusable with a shape colour.
_TINTS = ((40, 40, 40), (62, 58, 52), (34, 42, 58), (48, 60, 48), (72, 72, 76), (58, 44, 50), (24, 26, 30))

# (colour, shape, direction) combinations never shown in training, to test composition.
# Each colour and each direction appears twice, so every pair still occurs in training.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "right"),
    ("red", "triangle", "up-left"),
    ("green", "square", "left"),
    ("green", "circle", "down-right"),
    ("blue", "triangle", "up"),
    ("blue", "square", "down-left"),
    ("yellow", "circle", "down"),
    ("yellow", "triangle", "up-right"),
    ("magenta", "square", "up-right"),
    ("magenta", "circle", "left"),
    ("cyan", "triangle", "down-left"),
    ("cyan", "square", "right"),
    ("white", "circle", "up-left"),
    ("white", "triangle", "down"),
    ("orange", "square", "down-right"),
    ("orange", "circle", "up"),
)


@dataclass(frozen=True)
class ShapeSpec:
  colour: str
  shape: str
  direction: str
  speed: str
  background: str
  num_frames: int
  height: int
  width: int
  start: tuple[float, float]  # centre (y, x) in pixels at frame 0
  radius: float  # half-extent of the shape's bounding box, in pixels
  bg_seed: int  # picks the background tints and texture
  camera: str = ""  # a CAMERAS motion, or none
  # A TRACKS path other than "line": the centre (y, x) at each frame of the longest duration (a
  # shorter spec is its prefix); direction and speed are then "" and unused.
  path: tuple = ()


def caption(spec: ShapeSpec, rng: np.random.Generator | None = None, *, opening_motion: float = 0.0) -> str:
  """Full caption, or with `rng` the speed and background clauses each dropped w.p. 0.5.

  A 1-frame spec names no motion, unless it is the opening frame of a moving track (the
  latent cache's prefixes): then, with `rng`, its caption keeps the motion w.p. `opening_motion`.
  Where a shape starts depends on where it will go (its track stays in frame): these captions
  teach the model that placement (`sample.first_frame`, docs/design.md).
  """
  keep_speed = rng is None or rng.random() < 0.5
  keep_bg = rng is None or rng.random() < 0.5
  text = f"a {spec.colour} {spec.shape}"
  # No draw when opening_motion is 0: captions of existing runs and datasets stay as they were.
  if spec.path:
    text += " moves"  # along a path the caption does not describe: the trajectory gives it
  elif spec.num_frames > 1 or (rng is not None and opening_motion and rng.random() < opening_motion):
    text += f" moves {DIRECTION_PHRASES[spec.direction]}"
    if keep_speed:
      text += f" {spec.speed}"
  if keep_bg:
    text += f" on a {spec.background} background"
  return text


def _step(direction: str, speed: str, height: int, width: int) -> np.ndarray:
  """Per-frame (dy, dx) displacement in pixels."""
  return np.asarray(DIRECTIONS[direction]) * SPEEDS[speed] * min(height, width)


def sample_spec(
    rng: np.random.Generator,
    *,
    frames=(1, 5, 9, 13, 17),
    sizes=((32, 32), (32, 48), (48, 32), (48, 48), (32, 64), (64, 32), (48, 64), (64, 48), (64, 64)),
    exclude=HELD_OUT,
    textured=0.5,
    colours=None,
    tracks=("line",),
) -> ShapeSpec:
  """A random spec whose (colour, shape, direction) is not in `exclude`; a `textured` fraction
  of backgrounds is textured, the rest plain; colours drawn from `colours` (default COLOURS);
  its track of kind drawn from `tracks` (TRACKS)."""
  excluded = set(exclude)
  while True:
    combo = (rng.choice(list(colours or COLOURS)), rng.choice(SHAPES), rng.choice(list(DIRECTIONS)))
    if combo not in excluded:
      break
  colour, shape, direction = (str(c) for c in combo)
  speed = str(rng.choice(list(SPEEDS)))
  num_frames = int(rng.choice(frames))
  height, width = (int(s) for s in sizes[rng.integers(len(sizes))])
  radius = float(rng.uniform(0.14, 0.2) * min(height, width))
  disp = _step(direction, speed, height, width) * (num_frames - 1)
  start = []
  for d, size in zip(disp, (height, width)):
    # Keep centre +- radius inside [0, size - 1] on every frame of the track.
    lo, hi = radius - min(d, 0.0), size - 1 - radius - max(d, 0.0)
    start.append(float(rng.uniform(lo, hi)) if lo <= hi else (size - 1 - d) / 2)
  background = BACKGROUNDS[int(rng.random() < textured)]
  kind = str(rng.choice(tracks)) if len(tracks) > 1 else tracks[0]
  path = ()
  if kind != "line":  # a path the caption does not name: no direction or speed
    curve = curved_path(kind, rng, max(frames), height, width, radius)
    direction, speed, start, path = "", "", curve[0], tuple(map(tuple, curve.tolist()))
  return ShapeSpec(
      colour,
      shape,
      direction,
      speed,
      background,
      num_frames,
      height,
      width,
      (float(start[0]), float(start[1])),
      radius,
      int(rng.integers(2**31)),
      path=path,
  )


def make_spec(
    colour, shape, direction, *, num_frames, height, width, speed="quickly", background="plain", seed=0
) -> ShapeSpec:
  """A spec for a given combination with its track centred in the frame."""
  disp = _step(direction, speed, height, width) * (num_frames - 1)
  start = ((height - 1 - disp[0]) / 2, (width - 1 - disp[1]) / 2)
  return ShapeSpec(
      colour,
      shape,
      direction,
      speed,
      background,
      num_frames,
      height,
      width,
      (float(start[0]), float(start[1])),
      0.17 * min(height, width),
      seed,
  )


def curved_path(kind: str, rng: np.random.Generator, frames: int, height: int, width: int, radius: float):
  """A TRACKS path of `frames` centres (y, x), float64 [frames, 2], keeping centre +- radius in
  the frame on every frame."""
  lo = np.array([radius, radius])
  hi = np.array([height - 1 - radius, width - 1 - radius])
  span = hi - lo
  point = lambda: lo + rng.random(2) * span
  s = np.linspace(0.0, 1.0, frames)[:, None]
  if kind == "bezier":  # cubic, its control points in the box: the curve stays in their hull
    p0, p1, p2, p3 = (point() for _ in range(4))
    return (1 - s) ** 3 * p0 + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s**2 * p2 + s**3 * p3
  if kind == "zigzag":  # 3 or 4 corners, at constant speed along the path
    return _polyline([point() for _ in range(int(rng.integers(3, 5)))], frames)
  if kind == "circle":  # 0.6 to 0.9 of a turn, either way, about a centre where it fits
    r = rng.uniform(0.3, 0.5) * span.min() / 2
    centre = lo + r + rng.random(2) * (span - 2 * r)
    turn = rng.uniform(0.6, 0.9) * 2 * np.pi * rng.choice((-1, 1))
    angle = rng.uniform(0, 2 * np.pi) + turn * s[:, 0]
    return centre + r * np.stack([np.sin(angle), np.cos(angle)], -1)
  if kind == "stop":  # a straight move with a rest of a third to a half of the clip in it
    a, b = point(), point()
    rest = int(rng.integers(frames // 3, frames // 2 + 1))
    at = int(rng.integers(1, frames - rest))
    u = np.linspace(0.0, 1.0, frames - rest)
    move = np.concatenate([u[:at], np.full(rest, u[at - 1]), u[at:]])
    return a + move[:, None] * (b - a)
  raise ValueError(f"unknown track {kind!r}; choose from {TRACKS}")


def _polyline(corners, frames):
  """`frames` points at equal steps of arc length along the polyline through `corners`."""
  corners = np.asarray(corners, np.float64)
  seg = np.linalg.norm(np.diff(corners, axis=0), axis=1)
  arc = np.concatenate([[0.0], np.cumsum(seg)])
  at = np.linspace(0.0, arc[-1], frames)
  return np.stack([np.interp(at, arc, corners[:, k]) for k in range(2)], -1)


def track(spec: ShapeSpec) -> np.ndarray:
  """True centre (y, x) per frame, float32 [T, 2]."""
  if spec.path:
    return np.asarray(spec.path[: spec.num_frames], np.float32)
  t = np.arange(spec.num_frames, dtype=np.float64)[:, None]
  step = _step(spec.direction, spec.speed, spec.height, spec.width)
  return (np.asarray(spec.start) + t * step).astype(np.float32)


def _background(spec: ShapeSpec) -> np.ndarray:
  rng = np.random.default_rng(spec.bg_seed)
  h, w = spec.height, spec.width
  a, b = (np.asarray(_TINTS[i], np.float32) for i in rng.choice(len(_TINTS), 2, replace=False))
  if spec.background == "plain":
    return np.broadcast_to(a, (h, w, 3)).copy()
  y, x = np.mgrid[:h, :w]
  cell = int(rng.integers(3, 9))
  kind = rng.integers(3)
  if kind == 0:  # checkerboard
    mix = ((y // cell + x // cell) % 2).astype(np.float32)
  elif kind == 1:  # stripes, horizontal / vertical / diagonal
    coord = (y, x, y + x)[rng.integers(3)]
    mix = ((coord // cell) % 2).astype(np.float32)
  else:  # value noise: coarse random grid, bilinearly upsampled
    grid = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    gy, gx = y / cell, x / cell
    y0, x0 = gy.astype(int), gx.astype(int)
    fy, fx = gy - y0, gx - x0
    mix = (grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx) * (1 - fy) + (
        grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    ) * fy
  return a + (b - a) * mix[..., None]


def _mask(shape: str, cy: float, cx: float, r: float, h: int, w: int) -> np.ndarray:
  y, x = np.mgrid[:h, :w]
  dy, dx = y - cy, x - cx
  if shape == "circle":
    return dy**2 + dx**2 <= r**2
  if shape == "square":
    return (np.abs(dy) <= r) & (np.abs(dx) <= r)
  # Upward isosceles triangle filling half its 2r x 2r bounding box.
  return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)


def _placements(spec: ShapeSpec):
  """(centre y, centre x, radius, zoom) of the shape on each frame, as filmed: the camera scales
  the world about the frame centre (the shape's centre and size, and the background)."""
  centre = (np.asarray([spec.height, spec.width], np.float64) - 1) / 2
  for t, point in enumerate(track(spec)):
    zoom = CAMERAS[spec.camera] ** t if spec.camera else 1.0
    cy, cx = centre + zoom * (np.asarray(point, np.float64) - centre)
    yield cy, cx, zoom * spec.radius, zoom


def shape_masks(spec: ShapeSpec) -> np.ndarray:
  """bool [T, H, W]: where the spec's shape is on each frame."""
  return np.stack(
      [_mask(spec.shape, cy, cx, r, spec.height, spec.width) for cy, cx, r, _ in _placements(spec)]
  )


def render(spec: ShapeSpec) -> np.ndarray:
  """uint8 [T, H, W, 3] video of the spec."""
  bg = _background(spec)
  colour = np.asarray((COLOURS | NEW_COLOURS)[spec.colour], np.float32)
  video = np.empty((spec.num_frames, spec.height, spec.width, 3), np.uint8)
  centre = (np.asarray([spec.height, spec.width], np.float64) - 1) / 2
  for t, (cy, cx, r, zoom) in enumerate(_placements(spec)):
    m = _mask(spec.shape, cy, cx, r, spec.height, spec.width)
    # Each background pixel shows the world point it now covers (nearest neighbour).
    video[t] = np.where(m[..., None], colour, _zoomed(bg, zoom, centre)).round().astype(np.uint8)
  return video


def filmed(video: np.ndarray, camera: str) -> np.ndarray:
  """`video` [T, H, W, C] as the CAMERAS motion `camera` films it: frame t scaled about the frame
  centre by CAMERAS[camera] ** t (nearest neighbour). What a perfect camera adapter would make
  of a base's own samples (finetune_eval.json's `base_filmed`)."""
  centre = (np.asarray(video.shape[1:3], np.float64) - 1) / 2
  return np.stack([_zoomed(frame, CAMERAS[camera] ** t, centre) for t, frame in enumerate(video)])


def _zoomed(bg: np.ndarray, zoom: float, centre: np.ndarray) -> np.ndarray:
  if zoom == 1.0:
    return bg
  h, w = bg.shape[:2]
  ys = np.clip(np.rint(centre[0] + (np.arange(h) - centre[0]) / zoom), 0, h - 1).astype(int)
  xs = np.clip(np.rint(centre[1] + (np.arange(w) - centre[1]) / zoom), 0, w - 1).astype(int)
  return bg[ys[:, None], xs[None, :]]


class ShapesSource:
  """Random-access dataset of shape videos; example i depends only on (seed, i)."""

  def __init__(self, seed: int, size: int | None = None, camera: str = "", **sample_spec_kwargs):
    self.seed = seed
    self.size = size
    self.camera = camera
    self.sample_spec_kwargs = sample_spec_kwargs

  @classmethod
  def of_config(cls, config, size: int | None = None) -> "ShapesSource":
    """The shapes job's training videos: its seed, sizes and backgrounds, at the longest
    duration (shorter examples are prefixes)."""
    colours = tuple(config.data.colours) or None
    # Held-out (shape, direction) pairs stay held out in any colour drawn.
    held_out = HELD_OUT + tuple((c, s, d) for c in colours or () for _, s, d in HELD_OUT)
    return cls(
        config.seed,
        size,
        frames=(max(config.data.frames),),
        sizes=tuple(map(tuple, config.data.sizes)),
        textured=config.data.textured_fraction,
        camera=config.data.camera,
        colours=colours,
        tracks=tuple(config.data.tracks),
        exclude=held_out,
    )

  def __len__(self) -> int:
    return self.size if self.size is not None else 2**31 - 1

  def __getitem__(self, i: int) -> dict:
    if not 0 <= i < len(self):
      raise IndexError(i)
    rng = np.random.default_rng([self.seed, i])
    spec = sample_spec(rng, **self.sample_spec_kwargs)
    if self.camera:  # the same shapes and captions, filmed by the moving camera
      spec = dataclasses.replace(spec, camera=self.camera)
    return {"video": render(spec), "caption": caption(spec, rng), "spec": spec}

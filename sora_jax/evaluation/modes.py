"""Score the Sora prompting modes (extension, image at the last frame, connecting, looping,
SDEdit, chunked long videos) on "moving shapes" videos, one video per call.

Everything is read from shape centroids (`shapes.analyse_video`'s track), so the scores need
no model. Distances are a fraction of min(H, W) unless named `_px`. A shape that is never found
gives False / None scores, never an error. Results hold only Python floats, bools and None,
so they go straight into JSON.
"""

from __future__ import annotations

import numpy as np

from sora_jax.evaluation.shapes import (
    _MIN_DISPLACEMENT,
    _NAMES,
    analyse_video,
    centroids,
    detect_colours,
    direction_of,
)

_POSITION_TOL = 0.10  # of min(H, W): a shape this close to where it should be is "there"
_SEAM_TOL = 1.5  # a seam may jump this many true per-frame steps
# Centroids of a rasterised shape (blurred too, in generated videos) wobble by a fraction of a
# pixel even when it does not move: steps are compared with this slack.
_CENTROID_NOISE_PX = 0.5


def _track(video: np.ndarray, colour: str | None) -> np.ndarray:
  """Centroid (y, x) per frame of the shape in `colour`, as analyse_video's track.

  colour=None follows the shape in whatever palette colour it has, for videos whose colour is
  changing (an SDEdit at low strength keeps the source's colour, a transition morphs).
  """
  labels = detect_colours(video)
  return centroids(labels >= 0 if colour is None else labels == _NAMES.index(colour))


def _distance(p: np.ndarray, q: np.ndarray) -> float | None:
  """Pixels between two centroids; None where either is missing."""
  d = float(np.linalg.norm(np.asarray(p, np.float64) - q))
  return None if np.isnan(d) else d


def _steps(track: np.ndarray) -> np.ndarray:
  """Pixels moved between neighbouring frames, where both are found."""
  steps = np.linalg.norm(np.diff(track, axis=0), axis=-1)
  return steps[~np.isnan(steps)]


def _position_scores(name: str, dist_px: float | None, size: int) -> dict:
  """`name`_error as a fraction of `size` and `name`_ok within _POSITION_TOL; a missing shape fails."""
  error = None if dist_px is None else dist_px / size
  return {f"{name}_error": error, f"{name}_ok": error is not None and error <= _POSITION_TOL}


def extension_scores(video: np.ndarray, colour: str, direction: str, *, given, speed_px: float) -> dict:
  """A video extended forward or backward in time from `given` frames (a slice or index list,
  a block at the start or the end): does the generated part keep the motion, and does it join
  the given part without a jump larger than _SEAM_TOL true steps (`speed_px` per frame)?"""
  num_frames, height, width = video.shape[:3]
  given = np.arange(num_frames)[given]
  if not (
      0 < len(given) < num_frames
      and np.all(np.diff(given) == 1)
      and (given[0] == 0 or given[-1] == num_frames - 1)
  ):
    raise ValueError(f"given frames {given.tolist()} are not a block at the start or the end of {num_frames}")
  forward = given[0] == 0
  info = analyse_video(video, colour, direction)
  track = info["track"]
  generated = track[given[-1] + 1 :] if forward else track[: given[0]]
  seam = (given[-1], given[-1] + 1) if forward else (given[0] - 1, given[0])
  jump = _distance(track[seam[0]], track[seam[1]])
  ratio = None if jump is None else jump / speed_px
  return {
      "direction_ok": direction_of(generated, min(height, width)) == direction,
      "colour_ok": bool(info["colour_ok"]),
      "seam_jump_px": jump,
      "seam_ratio": ratio,
      "seam_ok": ratio is not None and ratio <= _SEAM_TOL,
  }


def end_position_scores(video: np.ndarray, colour: str, direction: str, *, image: np.ndarray) -> dict:
  """Image at the last frame: does the video end where the shape is in `image` (uint8 [H, W, 3]),
  moving the asked way?"""
  info = analyse_video(video, colour, direction)
  target = _track(image[None], colour)[0]
  return {
      **_position_scores("end", _distance(info["track"][-1], target), min(video.shape[1:3])),
      "direction_ok": bool(info["direction_ok"]),
      "colour_ok": bool(info["colour_ok"]),
  }


def connect_scores(
    video: np.ndarray, colour_a: str, colour_b: str, *, a_last: np.ndarray, b_first: np.ndarray
) -> dict:
  """A transition from clip a to clip b: it should start where a ends (frame `a_last`, shape in
  `colour_a`) and end where b starts (`b_first`, `colour_b`), and move smoothly in between.

  max_step_ratio is the largest step over the median one (followed in any colour, as the colour
  may change on the way): about 1 for steady motion, large for a cut. The median is floored at
  _CENTROID_NOISE_PX so a still shot with one cut still scores high; None with under 2 steps.
  """
  size = min(video.shape[1:3])
  start = _distance(_track(video[:1], colour_a)[0], _track(a_last[None], colour_a)[0])
  end = _distance(_track(video[-1:], colour_b)[0], _track(b_first[None], colour_b)[0])
  steps = _steps(_track(video, None))
  ratio = float(steps.max() / max(np.median(steps), _CENTROID_NOISE_PX)) if len(steps) >= 2 else None
  return {
      **_position_scores("start", start, size),
      **_position_scores("end", end, size),
      "max_step_ratio": ratio,
  }


def loop_scores(video: np.ndarray, colour: str) -> dict:
  """A looping video: played again from the start, the last frame should lead to the first by
  an ordinary step (up to _CENTROID_NOISE_PX), and the shape should move at all (a still video
  loops trivially)."""
  size = min(video.shape[1:3])
  track = _track(video, colour)
  steps = _steps(track)
  typical = float(np.median(steps)) if len(steps) else None
  wrap = _distance(track[-1], track[0])
  found = track[~np.isnan(track[:, 0])]
  reach = float(np.linalg.norm(found - found[0], axis=-1).max()) if len(found) else 0.0
  moves = reach >= _MIN_DISPLACEMENT * size
  wrap_ok = wrap is not None and typical is not None and wrap <= typical + _CENTROID_NOISE_PX
  return {
      "wrap_step_px": wrap,
      "typical_step_px": typical,
      "wrap_ratio": None if wrap is None or not typical else wrap / typical,
      "wrap_ok": wrap_ok,
      "moves": moves,
      "ok": wrap_ok and moves,
  }


def sdedit_scores(source: np.ndarray, edited: np.ndarray, source_colour: str, new_colour: str) -> dict:
  """SDEdit of a video to a new colour: the shape should stay where the source has it, frame by
  frame, and take `new_colour`. The edited shape is followed in any colour, since at low
  strength it keeps the source's; a frame where it is lost fails the layout."""
  size = min(source.shape[1:3])
  src, dst = _track(source, source_colour), _track(edited, None)
  dist = np.linalg.norm(src - dst, axis=-1)[~np.isnan(src[:, 0])]
  error = float(dist.mean()) / size if len(dist) and not np.isnan(dist).any() else None
  # Only the colour verdict is used: the direction is a placeholder.
  colour_ok = analyse_video(edited, new_colour, "right")["colour_ok"]
  return {
      "layout_error": error,
      "layout_ok": error is not None and error <= _POSITION_TOL,
      "colour_ok": bool(colour_ok),
  }


def chunk_scores(video: np.ndarray, colour: str, direction: str, *, chunk_frames: int) -> dict:
  """A long video made of consecutive `chunk_frames`-frame chunks: does every chunk keep the
  colour and the motion, not only the video as a whole? A last chunk of 1 frame has no
  direction (None, left out of direction_all)."""
  chunks = []
  for start in range(0, len(video), chunk_frames):
    info = analyse_video(video[start : start + chunk_frames], colour, direction)
    one_frame = len(info["track"]) < 2
    chunks.append(
        {
            "colour_ok": bool(info["colour_ok"]),
            "direction_ok": None if one_frame else bool(info["direction_ok"]),
        }
    )
  shares = summarise_mode(chunks, ["colour_ok", "direction_ok"])
  return {"chunks": chunks, "colour_all": shares["colour_ok"], "direction_all": shares["direction_ok"]}


def summarise_mode(results: list[dict], keys) -> dict:
  """Mean of each key over the results, booleans as 0 / 1, None left out (None if all are);
  `n` is the number of results."""
  summary = {}
  for key in keys:
    vals = [float(r[key]) for r in results if r[key] is not None]
    summary[key] = float(np.mean(vals)) if vals else None
  return {**summary, "n": len(results)}

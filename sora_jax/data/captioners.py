"""Captioners for `sora-jax prepare --captioner=...` (the Sora report's recaptioning: the model
trains on descriptive captions written from the videos themselves, as DALL-E 3 does for images).

A captioner is a function (frames uint8 [T, H, W, 3], caption: str) -> str, run on every clip;
its caption is stored beside the original (`generated_caption`) and training draws it with
probability `data.generated_caption_share`. Three kinds:
- `shapes`: describes a moving-shapes clip from its pixels (colour, shape, motion and where it
  starts), with the shapes evaluator's detectors; no ground truth is read;
- a local folder of a Hugging Face image-to-text model (e.g. BLIP, GIT; the `captioner` extra:
  transformers and torch), run on the clip's middle frame; nothing is downloaded;
- a Python entry point `module:function` with the signature above (e.g. a video-language model).
"""

import functools
import importlib
import os

import numpy as np

from sora_jax.config import ConfigError

MAX_NEW_TOKENS = 40


def describe_shapes(frames, caption=""):
  """What a moving-shapes clip shows, read from its pixels: 'a red circle moves up and to the
  right, from the bottom left of the frame' (the training captions' vocabulary)."""
  from sora_jax.data.synthetic import COLOURS, DIRECTION_PHRASES
  from sora_jax.evaluation.shapes import analyse_video, detect_colours

  del caption  # written from the pixels alone
  labels = detect_colours(frames)
  names = list(COLOURS)  # detect_colours' labels index the palette
  counts = np.bincount(labels[labels >= 0], minlength=len(names))
  if not counts.any():
    return "an empty plain background"
  colour = names[int(counts.argmax())]
  seen = analyse_video(frames, colour, direction="")
  text = f"a {colour} {seen['shape'] or 'shape'}"
  direction = seen["direction"]
  text += f" moves {DIRECTION_PHRASES[direction]}" if direction else " stays still"
  track = seen["track"][~np.isnan(seen["track"][:, 0])]
  if len(track):
    height, width = frames.shape[1:3]
    y, x = track[0] / (height, width)
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    where = "centre" if (row, column) == ("middle", "centre") else f"{row} {column}".replace("middle ", "")
    text += f", from the {where} of the frame"
  return text


def transformers_captioner(folder):
  """An image-to-text model from a local folder, captioning each clip's middle frame."""
  from sora_jax.models.hf_local import load_local

  processor, model = load_local(
      "--captioner",
      folder,
      "an image-to-text model folder",
      lambda hf, path: (
          hf.AutoProcessor.from_pretrained(path, local_files_only=True),
          hf.AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).eval(),
      ),
  )
  import torch  # present: load_local checked

  def caption(frames, original=""):
    del original
    inputs = processor(images=frames[len(frames) // 2], return_tensors="pt")
    with torch.no_grad():
      ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

  return caption


@functools.lru_cache(maxsize=None)
def load_captioner(spec):
  """`shapes`, a model folder, or `module:function`; anything else is one clear line. Cached: a
  model folder is loaded once per process (prepare checks the name before building, the builder
  or each Beam worker then captions with it)."""
  if spec == "shapes":
    return describe_shapes
  if os.path.isdir(spec):
    return transformers_captioner(spec)
  module, _, function = spec.partition(":")
  if not module or not function:
    raise ConfigError(
        f"--captioner={spec!r}: give 'shapes', a local model folder or a Python entry point 'module:function'"
    )
  try:
    return getattr(importlib.import_module(module), function)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f"--captioner={spec!r}: cannot load it ({e})") from None

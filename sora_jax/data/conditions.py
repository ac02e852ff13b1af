"""Conditions: given content placed at latent frames of an example, held clean while the rest is
generated (image-to-video at any frame, extension forward and backward, connecting, loops).

One module serves training and sampling. Training draws a mask strategy per example and takes
the conditions from the example's own latents (`draw_conditions`); sampling turns a user's
pictures or clips into the same `Condition`s (`encode_given`). Either way `apply_conditions`
writes them into the example's latent and gives the per-token `cond_mask` of the packed-batch
contract: conditioning tokens get the clean (t = 0) adaLN slot and no loss.
"""

import dataclasses

import numpy as np

from sora_jax.config import VAE_TEMPORAL, ConfigError

# Per-example mask strategies of training (Open-Sora 1.2's mix): their shares are config keys
# `data.cond.<name>`; what is left of 1 is text-to-video (no condition).
MASK_STRATEGIES = ("image_head", "image_tail", "head_tail", "head_frames", "tail_frames", "random_frames")
# Latent groups of static frames encoded before a clip placed after frame 0 (`encode_given`):
# the causal encoder's context for the clip's first group. Measured in docs/design.md.
WINDOW_GROUPS = 2


@dataclasses.dataclass(frozen=True)
class Condition:
  """Standardised latents [k, h, w, C] given at latent frames [frame, frame + k).

  strength 1 holds them clean for the whole sampling (the trained conditioning); a strength
  s < 1 only guides: the tokens are replaced by the condition noised to the current level while
  t > 1 - s, then generated freely (SDEdit is a condition on every frame with s = 1 - t_start).
  """

  latents: np.ndarray
  frame: int
  strength: float = 1.0

  def span(self, num_latent_frames):
    start = self.frame + num_latent_frames if self.frame < 0 else self.frame
    stop = start + len(self.latents)
    if start < 0 or stop > num_latent_frames:
      raise ConfigError(
          f"a condition at latent frames {start}..{stop - 1} lies outside the "
          f"{num_latent_frames} latent frames of the output"
      )
    return start, stop


def apply_conditions(z, conditions, positions, patch_t):
  """Write conditions into latent z [T, h, w, C] (a copy) -> (z, cond_mask, release) as
  `token_masks` gives them for tokens at `positions`."""
  z = np.array(z, np.float32)
  for cond in conditions:
    start, stop = cond.span(len(z))
    if cond.latents.shape[1:] != z.shape[1:]:
      raise ConfigError(
          f"a condition of latent size {cond.latents.shape[1:3]} does not match the "
          f"output's {z.shape[1:3]}"
      )
    z[start:stop] = cond.latents
  return (z, *token_masks(conditions, len(z), positions, patch_t))


def token_masks(conditions, num_latent_frames, positions, patch_t):
  """(cond_mask [n] bool, release [n] float32) for tokens at `positions` [n, 3] (patch
  coordinates, temporal patch `patch_t`): a token is held clean iff every latent frame it covers
  is given at strength 1; `release` is the noise level down to which a weaker condition guides
  its tokens (1: not guided). Training uses the mask alone (its tokens are already the latents).
  """
  held = np.zeros(num_latent_frames, bool)
  release = np.ones(num_latent_frames, np.float32)
  for cond in conditions:
    start, stop = cond.span(num_latent_frames)
    if not 0.0 < cond.strength <= 1.0:
      raise ConfigError(f"condition strength {cond.strength} must be in (0, 1]")
    if cond.strength == 1.0:
      held[start:stop] = True
    else:
      release[start:stop] = np.minimum(release[start:stop], 1.0 - cond.strength)
  per_patch = lambda v: v.reshape(-1, patch_t)
  if (per_patch(held).any(1) != per_patch(held).all(1)).any():
    raise ConfigError(
        f"conditioned latent frames {np.nonzero(held)[0].tolist()} do not fill whole "
        f"temporal patches of {patch_t} frames"
    )
  token_t = positions[:, 0]
  return per_patch(held).all(1)[token_t], per_patch(release).max(1)[token_t]


def draw_conditions(strategy, z, patch_t, rng, still_tail=None):
  """Training: the conditions of one mask strategy, taken from the example's own latent z.

  Spans are drawn in temporal patches, so every conditioned token is whole; at least one
  patch is always left to generate (with 2 patches, head + tail falls back to the head).
  still_tail: the latent [1, h, w, C] of the example's last frame as a still group
  (`still_latent`): image_tail conditions on it, as sampling does with a picture at the last
  frame, rather than on the true (moving) last group, when the temporal patch is 1.
  """
  n = len(z) // patch_t
  if strategy is None or n < 2:
    return []
  span = lambda a, b: Condition(z[a * patch_t : b * patch_t], a * patch_t)
  if strategy == "image_head" or (strategy == "head_tail" and n == 2):
    return [span(0, 1)]
  if strategy == "image_tail":
    if still_tail is not None and patch_t == 1:
      return [Condition(np.asarray(still_tail, np.float32), len(z) - 1)]
    return [span(n - 1, n)]
  if strategy == "head_tail":
    return [span(0, 1), span(n - 1, n)]
  k = int(rng.integers(1, n))
  if strategy == "head_frames":
    return [span(0, k)]
  if strategy == "tail_frames":
    return [span(n - k, n)]
  if strategy == "random_frames":
    return [span(int(a), int(a) + 1) for a in sorted(rng.choice(n, size=k, replace=False))]
  raise ValueError(f"unknown mask strategy {strategy!r}; choose from {MASK_STRATEGIES}")


def draw_strategy(shares, rng):
  """A strategy name with probability shares[name], or None (text-to-video) for the rest."""
  u, total = rng.random(), 0.0
  for name in MASK_STRATEGIES:
    total += shares[name]
    if u < total:
      return name
  return None


def check_shares(shares, key="data.cond"):
  for name in MASK_STRATEGIES:
    if not 0.0 <= shares[name] <= 1.0:
      raise ConfigError(f"{key}.{name}={shares[name]} is a share; it must be in [0, 1]")
  total = sum(shares[name] for name in MASK_STRATEGIES)
  if total > 1.0 + 1e-9:
    raise ConfigError(
        f"{key} shares sum to {total:g}; they must sum to at most 1 (the rest is text-to-video)"
    )


def check_edit_strength(strength):
  """SDEdit's strength is the noise level its source is taken to: in (0, 1]."""
  if not 0.0 < strength <= 1.0:
    raise ConfigError(f"strength={strength}: SDEdit's strength must be in (0, 1]")


def latent_frame_of(frame, num_frames):
  """Output pixel frame -> the latent frame holding it (frame 0 alone, then groups of 4)."""
  f = frame + num_frames if frame < 0 else frame
  if not 0 <= f < num_frames:
    raise ConfigError(f"frame {frame} is outside the {num_frames} frames of the output")
  return -(-f // VAE_TEMPORAL)


def encode_given(encode, frames, at, num_frames, strength=1.0, window_groups=WINDOW_GROUPS):
  """Pixels given at an output frame -> a Condition, as the causal VAE would encode them in place.

  encode: uint8 video [1 + 4m, H, W, 3] -> standardised latents [1 + m, h, w, C].
  frames: uint8 [F, H, W, 3] for output frames at .. at + F - 1 (`at` < 0 counts from the end).
  - At frame 0: the clip is the start of a causal video, encoded as its own video (exact);
    it must hold 1 + 4k frames.
  - After frame 0: latent frame j covers frames 4j-3..4j and depends on what came before. A
    clip must fill whole groups (start at 4j-3, 4k frames) and is encoded after `window_groups`
    groups of copies of its first frame, a causal window standing in for the unknown past; its
    last latents are kept.
  - A single image after frame 0 fills its group with copies of itself (a still group). Every
    latent frame of a still video equals its first (causal padding repeats frame 0, which is
    grouped with copies of itself), so that is the image's own latent: `still_latent`.
  """
  frames = np.asarray(frames, np.uint8)
  count = len(frames)
  first = at + num_frames if at < 0 else at
  if first < 0 or first + count > num_frames:
    raise ConfigError(
        f"{count} given frame(s) at frame {at} do not fit in the {num_frames} frames of the output"
    )
  if first == 0:
    if (count - 1) % VAE_TEMPORAL:
      raise ConfigError(f"a clip at frame 0 needs 1 + {VAE_TEMPORAL}k frames, got {count}")
    return Condition(encode(frames), 0, strength)
  j = latent_frame_of(first, num_frames)
  if count == 1:
    return Condition(still_latent(encode, frames[0]), j, strength)
  if (first - 1) % VAE_TEMPORAL or count % VAE_TEMPORAL:
    raise ConfigError(
        f"a clip after frame 0 must start at frame 4j-3 (1, 5, 9, ...) and hold 4k frames; "
        f"got {count} frames at frame {first}"
    )
  k = len(frames) // VAE_TEMPORAL
  window = np.concatenate([np.repeat(frames[:1], 1 + VAE_TEMPORAL * window_groups, axis=0), frames])
  return Condition(encode(window)[-k:], j, strength)


def still_latent(encode, image):
  """The latent [1, h, w, C] of a still group of `image` (uint8 [H, W, 3]) anywhere in a video:
  the image encoded alone (measured equal to encoding it after a still window, to 1e-5 of the
  latents' spread). Training's image_tail strategy conditions on this (`draw_conditions`), as
  sampling gives a picture at a later frame."""
  return encode(np.asarray(image, np.uint8)[None])

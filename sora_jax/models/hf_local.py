"""Local Hugging Face (transformers, torch) models behind the text seams: the captioner of
`prepare --captioner=FOLDER` and the prompt expander of `sample --expand_prompt=FOLDER`. Loaded
from the folder only (local_files_only): nothing is downloaded. The `captioner` extra."""

from sora_jax.config import ConfigError


def load_local(flag, folder, kind, load):
  """load(transformers, folder) -> what it builds; a missing library or a folder holding
  another kind of model is one line naming the flag and the folder."""
  try:
    import torch  # noqa: F401 - the models run in torch; fail here, not mid-load
    import transformers
  except ImportError:
    raise ConfigError(
        f"{flag}={folder}: a model folder needs transformers and torch (pip install 'sora-jax[captioner]')"
    ) from None
  try:
    return load(transformers, folder)
  except (OSError, ValueError, KeyError) as e:
    raise ConfigError(f"{flag}={folder}: not {kind} ({str(e).splitlines()[0]})") from None

"""Prompt expansion before sampling (the Sora report's "Language understanding": short user
prompts are turned into the long, descriptive captions the model was trained on).

`sora-jax sample --expand_prompt=NAME` runs an expander over every prompt: `rules` (the shapes
data's: terse prompts such as "red circle right" or "fast blue square up-left" become the
training captions' style, "a blue square moves up and to the left quickly"), a local folder of a
Hugging Face text model (seq2seq such as Flan-T5, or a causal LM; the `captioner` extra:
transformers and torch) asked to rewrite each prompt, or a Python entry point `module:function`
taking and returning a list of strings. What an expander changed is printed, so a sample can be
traced to its caption.
"""

import importlib
import os
import re

from sora_jax.config import ConfigError
from sora_jax.data.synthetic import BACKGROUNDS, COLOURS, DIRECTION_PHRASES, SPEEDS

SHAPE_WORDS = {
    "circle": "circle",
    "ball": "circle",
    "disc": "circle",
    "dot": "circle",
    "square": "square",
    "box": "square",
    "block": "square",
    "triangle": "triangle",
}
SPEED_WORDS = {
    "slowly": "slowly",
    "slow": "slowly",
    "quickly": "quickly",
    "quick": "quickly",
    "fast": "quickly",
}
VERTICAL = {
    "up": "up",
    "upward": "up",
    "upwards": "up",
    "top": "up",
    "north": "up",
    "down": "down",
    "downward": "down",
    "downwards": "down",
    "bottom": "down",
    "south": "down",
}
HORIZONTAL = {
    "right": "right",
    "rightward": "right",
    "east": "right",
    "left": "left",
    "leftward": "left",
    "west": "left",
}


def rule_expand(prompt):
  """A terse shapes prompt -> the training captions' form; a prompt naming no colour or no shape
  is returned unchanged (the rules have nothing to say about it)."""
  words = re.findall(r"[a-z]+", prompt.lower())
  colour = next((w for w in words if w in COLOURS), None)
  shape = next((SHAPE_WORDS[w] for w in words if w in SHAPE_WORDS), None)
  if colour is None or shape is None:
    return prompt
  vertical = next((VERTICAL[w] for w in words if w in VERTICAL), None)
  horizontal = next((HORIZONTAL[w] for w in words if w in HORIZONTAL), None)
  direction = "-".join(d for d in (vertical, horizontal) if d)
  speed = next((SPEED_WORDS[w] for w in words if w in SPEED_WORDS), None)
  background = next((w for w in words if w in BACKGROUNDS), None)
  text = f"a {colour} {shape}"
  if direction in DIRECTION_PHRASES:
    text += f" moves {DIRECTION_PHRASES[direction]}"
    if speed in SPEEDS:
      text += f" {speed}"
  if background:
    text += f" on a {background} background"
  return text


# What a local language model is asked (the Sora report: "turn short user prompts into longer
# detailed captions"); the prompt follows.
INSTRUCTION = "Rewrite this video prompt as one detailed caption of what the video shows: "
MAX_NEW_TOKENS = 77


def model_expander(folder):
  """list[str] -> list[str] with a local seq2seq or causal language model, greedy decoding."""
  from sora_jax.models.hf_local import load_local

  def load(hf, path):
    seq2seq = hf.AutoConfig.from_pretrained(path, local_files_only=True).is_encoder_decoder
    loader = hf.AutoModelForSeq2SeqLM if seq2seq else hf.AutoModelForCausalLM
    model = loader.from_pretrained(path, local_files_only=True).eval()
    return seq2seq, hf.AutoTokenizer.from_pretrained(path, local_files_only=True), model

  seq2seq, tokenizer, model = load_local("--expand_prompt", folder, "a text model folder", load)
  import torch  # present: load_local checked

  def expand(prompts):
    out = []
    for prompt in prompts:
      inputs = tokenizer(INSTRUCTION + prompt, return_tensors="pt")
      with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
      new = ids[0] if seq2seq else ids[0, inputs["input_ids"].shape[1] :]  # a causal LM repeats its input
      out.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return out

  return expand


def load_expander(name):
  """`rules`, a local model folder, or `module:function` (list[str] -> list[str]); anything
  else is one clear line. An expander must give one non-empty string per prompt."""
  if name == "rules":
    return lambda prompts: [rule_expand(p) for p in prompts]
  if os.path.isdir(name):
    fn = model_expander(name)
  else:
    module, _, function = name.partition(":")
    if not module or not function:
      raise ConfigError(
          f"--expand_prompt={name!r}: give 'rules', a local model folder or a Python entry point 'module:function'"
      )
    try:
      fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
      raise ConfigError(f"--expand_prompt={name!r}: cannot load it ({e})") from None

  def expand(prompts):
    out = list(fn(list(prompts)))
    if len(out) != len(prompts) or not all(isinstance(p, str) and p.strip() for p in out):
      raise ConfigError(f"--expand_prompt={name!r} must return one non-empty string per prompt")
    return out

  return expand

"""Prompt expansion: terse shapes prompts become the training captions' form; entry points plug in."""
import pytest

from sora_jax.config import ConfigError
from sora_jax.data.synthetic import ShapeSpec, caption
from sora_jax.prompts import load_expander, rule_expand


@pytest.mark.parametrize("terse, expected", [
    ("red circle right", "a red circle moves to the right"),
    ("fast blue box up-left", "a blue square moves up and to the left quickly"),
    ("Green ball going down slowly, textured", "a green circle moves down slowly on a textured background"),
    ("yellow triangle", "a yellow triangle"),
    ("a cat on a sofa", "a cat on a sofa"),  # no colour and shape of the data: left alone
])
def test_rules_write_the_training_captions_form(terse, expected):
  assert rule_expand(terse) == expected


def test_an_expanded_caption_is_one_the_generator_writes():
  spec = ShapeSpec(colour="magenta", shape="square", direction="down-right", speed="slowly",
                   background="plain", num_frames=17, height=48, width=48, start=(24.0, 24.0), radius=8.0,
                   bg_seed=0)
  assert rule_expand("magenta square down right slow plain") == caption(spec)


def test_entry_points_and_bad_names():
  assert load_expander("rules")(["red circle up"]) == ["a red circle moves up"]
  assert load_expander("builtins:list")(["x", "y"]) == ["x", "y"]  # any list -> list callable
  with pytest.raises(ConfigError, match="give 'rules', a local model folder or a Python entry point"):
    load_expander("gpt")
  with pytest.raises(ConfigError, match="cannot load it"):
    load_expander("no_such_module:expand")
  with pytest.raises(ConfigError, match="one non-empty string per prompt"):
    load_expander("builtins:sorted")(["b", ""])

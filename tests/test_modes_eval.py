"""Prompting-mode scores (sora_jax.evaluation.modes): true videos pass, broken ones fail."""

import json

import numpy as np
import pytest

from sora_jax.data.synthetic import SPEEDS, make_spec, render, sample_spec
from sora_jax.evaluation.modes import (
    _track,
    chunk_scores,
    connect_scores,
    end_position_scores,
    extension_scores,
    loop_scores,
    sdedit_scores,
    summarise_mode,
)
from sora_jax.evaluation.shapes import analyse_video, direction_of

H = W = 48
SPEED_PX = SPEEDS["quickly"] * min(H, W)


def _clip(colour="red", direction="right", shape="circle"):
  return render(make_spec(colour, shape, direction, num_frames=17, height=H, width=W))


def test_track_and_direction_match_analyse_video():
  rng = np.random.default_rng(0)
  for _ in range(8):
    s = sample_spec(rng, frames=(9, 17), exclude=())
    video = render(s)
    info = analyse_video(video, s.colour, s.direction)
    np.testing.assert_allclose(_track(video, s.colour), info["track"], atol=1e-4)
    assert direction_of(info["track"], min(s.height, s.width)) == info["direction"]


@pytest.mark.parametrize("given", [slice(0, 9), slice(9, 17)])
def test_extension_true_video_passes(given):
  scores = extension_scores(_clip(), "red", "right", given=given, speed_px=SPEED_PX)
  assert scores["direction_ok"] and scores["colour_ok"] and scores["seam_ok"]
  assert abs(scores["seam_ratio"] - 1.0) < 0.2
  json.dumps(scores)


def test_extension_reversed_generation_fails_direction():
  video = _clip()
  video[9:] = video[9:][::-1].copy()
  assert not extension_scores(video, "red", "right", given=range(9), speed_px=SPEED_PX)["direction_ok"]


def test_extension_shifted_generation_fails_seam():
  video = _clip()
  video[9:] = np.roll(video[9:], 10, axis=1)  # 10 px down; the shape stays in frame
  scores = extension_scores(video, "red", "right", given=slice(0, 9), speed_px=SPEED_PX)
  assert scores["direction_ok"] and not scores["seam_ok"] and scores["seam_ratio"] > 5


def test_end_position():
  video = _clip()
  assert end_position_scores(video, "red", "right", image=video[-1]) == {
      "end_error": pytest.approx(0.0, abs=1e-6),
      "end_ok": True,
      "direction_ok": True,
      "colour_ok": True,
  }
  elsewhere = _clip(direction="left")[-1]
  scores = end_position_scores(video, "red", "right", image=elsewhere)
  assert not scores["end_ok"] and scores["end_error"] > 0.3


def test_connect_smooth_transition_passes_and_cut_does_not():
  blue, red = _clip("blue"), _clip("red")
  transition = np.concatenate([blue[:8], red[8:]])  # same track, colour changes half-way
  scores = connect_scores(transition, "blue", "red", a_last=blue[0], b_first=red[-1])
  assert scores["start_ok"] and scores["end_ok"] and scores["max_step_ratio"] < 1.5
  json.dumps(scores)
  cut = np.concatenate([red[:6], red[-6:]])
  assert connect_scores(cut, "red", "red", a_last=red[0], b_first=red[-1])["max_step_ratio"] > 5
  still_cut = np.concatenate([red[:1].repeat(6, 0), red[-1:].repeat(6, 0)])  # median step 0
  assert connect_scores(still_cut, "red", "red", a_last=red[0], b_first=red[-1])["max_step_ratio"] > 5


def test_loop():
  video = _clip()
  ping_pong = np.concatenate([video, video[-2:0:-1]])  # ends one step before frame 0
  assert loop_scores(ping_pong, "red")["ok"]
  one_way = loop_scores(video, "red")
  assert one_way["moves"] and not one_way["wrap_ok"] and one_way["wrap_ratio"] > 10
  still = loop_scores(video[:1].repeat(17, 0), "red")
  assert still["wrap_ok"] and not still["moves"] and not still["ok"]


def test_sdedit():
  source = _clip("red")
  assert sdedit_scores(source, _clip("blue"), "red", "blue") == {
      "layout_error": pytest.approx(0.0, abs=1e-6),
      "layout_ok": True,
      "colour_ok": True,
  }
  unchanged = sdedit_scores(source, source, "red", "blue")  # low strength: layout kept, colour not
  assert unchanged["layout_ok"] and not unchanged["colour_ok"]
  moved = sdedit_scores(source, _clip("blue", direction="left"), "red", "blue")
  assert not moved["layout_ok"] and moved["colour_ok"]


def test_chunks_of_a_long_video():
  video = render(make_spec("red", "circle", "right", num_frames=65, height=48, width=192, speed="slowly"))
  scores = chunk_scores(video, "red", "right", chunk_frames=16)  # 4 chunks and a 1-frame one
  assert len(scores["chunks"]) == 5 and scores["chunks"][-1]["direction_ok"] is None
  assert scores["colour_all"] == 1.0 and scores["direction_all"] == 1.0
  video[32:48] = video[32:48][::-1].copy()
  assert chunk_scores(video, "red", "right", chunk_frames=16)["direction_all"] == 0.75


def test_long_videos_are_scored_where_their_track_fits():
  from sora_jax.evaluation.shapes import eval_prompts, true_clip
  from sora_jax.mode_evaluation import LONG_LENGTH, LONG_SPEED, long_prompts

  chosen = long_prompts(eval_prompts(), 17)
  assert len(chosen) == 8  # the held-out prompts moving along an axis
  for p, i, _ in chosen:
    assert p["caption"].endswith(LONG_SPEED) and (p["height"], p["width"]) in ((32, 64), (64, 32))
    # The true long video (its first frame is the one given) keeps colour and motion in every chunk.
    video = true_clip(p, i, num_frames=LONG_LENGTH * 17, speed=LONG_SPEED)
    scores = chunk_scores(video, p["colour"], p["direction"], chunk_frames=17)
    assert scores["colour_all"] == 1.0 and scores["direction_all"] == 1.0, p["caption"]


def test_shape_never_found_scores_false():
  blank = np.full((17, H, W, 3), 40, np.uint8)
  frame = _clip()[0]
  results = [
      extension_scores(blank, "red", "right", given=slice(0, 9), speed_px=SPEED_PX),
      end_position_scores(blank, "red", "right", image=frame),
      connect_scores(blank, "red", "red", a_last=frame, b_first=frame),
      loop_scores(blank, "red"),
      sdedit_scores(_clip(), blank, "red", "blue"),
      chunk_scores(blank, "red", "right", chunk_frames=8),
  ]
  for scores in results:
    json.dumps(scores)
    flat = {k: v for k, v in scores.items() if k != "chunks"}
    assert not any(v for v in flat.values()), scores


def test_summarise_mode_skips_none():
  results = [{"ok": True, "err": 0.2}, {"ok": False, "err": None}, {"ok": None, "err": 0.4}]
  assert summarise_mode(results, ["ok", "err"]) == {"ok": 0.5, "err": pytest.approx(0.3), "n": 3}
  assert summarise_mode([{"ok": None}], ["ok"]) == {"ok": None, "n": 1}

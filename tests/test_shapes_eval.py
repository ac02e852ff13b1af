import numpy as np

from sora_jax.data.synthetic import HELD_OUT, make_spec, render, sample_spec
from sora_jax.evaluation.shapes import analyse_video, detect_colours, eval_prompts, short_caption, summarise

SIZES = ((32, 32), (33, 47), (48, 64), (64, 96), (96, 96), (96, 32))


def _blur_and_noise(video, rng):
    p = np.pad(video.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = video.shape[1:3]
    box = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    return np.clip(box + rng.normal(0, 4, box.shape), 0, 255).astype(np.uint8)


def _evaluate(degrade, n=60):
    rng = np.random.default_rng(0)
    results = []
    for _ in range(n):
        s = sample_spec(rng, frames=(9, 13, 17), sizes=SIZES, exclude=())
        results.append(analyse_video(degrade(render(s), rng), s.colour, s.direction, s.shape))
    return summarise(results)


def test_ground_truth_renders():
    summary = _evaluate(lambda v, rng: v)
    assert summary["n"] == 60
    assert summary["colour_accuracy"] == 1.0 and summary["direction_accuracy"] == 1.0
    assert summary["shape_accuracy"] >= 0.9


def test_blurred_noisy_renders():
    summary = _evaluate(_blur_and_noise)
    assert summary["colour_accuracy"] >= 0.95 and summary["direction_accuracy"] >= 0.95


def test_background_is_never_a_colour():
    video = render(make_spec("red", "square", "up", num_frames=3, height=32, width=32,
                             background="textured", seed=5))
    video[:] = video[0, 0, 0]  # background only
    assert (detect_colours(video) == -1).all()
    r = analyse_video(video, "red", "up")
    assert r["dominant_colour"] is None and r["direction"] is None and np.isnan(r["track"]).all()


def test_static_and_wrong_colour():
    spec = make_spec("green", "circle", "left", num_frames=9, height=48, width=48)
    static = np.repeat(render(spec)[:1], 9, axis=0)
    r = analyse_video(static, "green", "left", "circle")
    assert r["colour_ok"] and r["direction"] is None and not r["direction_ok"] and r["shape_ok"]
    r = analyse_video(render(spec), "blue", "left")
    assert not r["colour_ok"] and r["dominant_colour"] == "green" and r["shape_ok"] is None


def test_float_video_in_unit_range():
    spec = make_spec("yellow", "triangle", "down", num_frames=9, height=48, width=48)
    r = analyse_video(render(spec) / 255.0, "yellow", "down", "triangle")
    assert r["colour_ok"] and r["direction_ok"] and r["shape_ok"]


def test_eval_prompts():
    prompts = eval_prompts()
    assert len(prompts) == len(HELD_OUT)
    p = prompts[0]
    assert p["caption"] == short_caption(*HELD_OUT[0]) == "a red circle moves to the right"
    assert (p["num_frames"], p["height"], p["width"]) == (17, 48, 48)
    for p in prompts:  # the centred held-out renders themselves are read back correctly
        spec = make_spec(p["colour"], p["shape"], p["direction"], num_frames=p["num_frames"],
                         height=p["height"], width=p["width"])
        r = analyse_video(render(spec), p["colour"], p["direction"], p["shape"])
        assert r["colour_ok"] and r["direction_ok"] and r["shape_ok"]

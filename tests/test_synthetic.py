import itertools
from dataclasses import replace

import numpy as np
import pytest

from sora_jax.data.synthetic import (BACKGROUNDS, COLOURS, DIRECTIONS, HELD_OUT, SHAPES, SPEEDS,
                                     ShapeSpec, ShapesSource, caption, make_spec, render,
                                     sample_spec, track)


def test_palette_and_directions():
    rgb = np.array(list(COLOURS.values()), float)
    dists = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert dists.min() > 90
    for dy, dx in DIRECTIONS.values():
        assert np.isclose(np.hypot(dy, dx), 1.0)


def test_held_out_keeps_every_pair_in_training():
    assert len(HELD_OUT) == 16 and len(set(HELD_OUT)) == 16
    train = set(itertools.product(COLOURS, SHAPES, DIRECTIONS)) - set(HELD_OUT)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        all_pairs = {(t[i], t[j]) for t in itertools.product(COLOURS, SHAPES, DIRECTIONS)}
        assert {(t[i], t[j]) for t in train} == all_pairs


def test_sample_spec_respects_choices_and_stays_in_frame():
    rng = np.random.default_rng(0)
    for _ in range(300):
        s = sample_spec(rng)
        assert (s.colour, s.shape, s.direction) not in HELD_OUT
        assert s.background in BACKGROUNDS and s.speed in SPEEDS
        tr = track(s)
        assert tr.shape == (s.num_frames, 2) and tr.dtype == np.float32
        assert (tr - s.radius >= -1e-3).all()
        assert (tr[:, 0] + s.radius <= s.height - 1 + 1e-3).all()
        assert (tr[:, 1] + s.radius <= s.width - 1 + 1e-3).all()
    s = sample_spec(rng, frames=(3,), sizes=((20, 30),), exclude=())
    assert (s.num_frames, s.height, s.width) == (3, 20, 30)


def test_render_colours_and_motion():
    spec = make_spec("orange", "square", "down-right", num_frames=17, height=48, width=64,
                     background="textured", seed=3)
    video = render(spec)
    assert video.shape == (17, 48, 64, 3) and video.dtype == np.uint8
    is_shape = (video == COLOURS["orange"]).all(-1)
    assert (video[~is_shape] <= 90).all()  # dark background
    ys, xs = np.nonzero(is_shape[0])
    np.testing.assert_allclose([ys.mean(), xs.mean()], track(spec)[0], atol=0.6)
    disp = track(spec)[-1] - track(spec)[0]
    assert np.linalg.norm(disp) > 0.3 * 48 and disp[0] > 0 and disp[1] > 0
    # Track centred in the frame.
    np.testing.assert_allclose(track(spec).mean(0), [23.5, 31.5], atol=1e-4)


def test_shape_fill_ratios():
    for shape, lo, hi in [("square", 0.95, 1.0), ("circle", 0.7, 0.85), ("triangle", 0.45, 0.6)]:
        spec = make_spec("red", shape, "up", num_frames=1, height=64, width=64)
        m = (render(spec)[0] == COLOURS["red"]).all(-1)
        ys, xs = np.nonzero(m)
        assert lo <= m.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)) <= hi, shape


def test_captions():
    spec = make_spec("red", "circle", "up-left", num_frames=9, height=32, width=32, speed="slowly")
    assert caption(spec) == "a red circle moves up and to the left slowly on a plain background"
    rng = np.random.default_rng(0)
    seen = {caption(spec, rng) for _ in range(100)}
    assert seen == {"a red circle moves up and to the left",
                    "a red circle moves up and to the left slowly",
                    "a red circle moves up and to the left on a plain background",
                    "a red circle moves up and to the left slowly on a plain background"}
    image = replace(spec, num_frames=1)
    assert caption(image) == "a red circle on a plain background"
    # The opening frame of a moving track names its motion in the given share of captions.
    assert not any("moves" in caption(image, rng) for _ in range(100))
    named = [" moves up and to the left" in caption(image, rng, opening_motion=0.5) for _ in range(400)]
    assert 0.4 < np.mean(named) < 0.6


def test_source_is_deterministic_and_order_free():
    a, b = ShapesSource(7, size=10), ShapesSource(7, size=10)
    assert len(a) == 10 and len(ShapesSource(0)) == 2**31 - 1
    ex = a[5]
    for i in (9, 0, 5):
        b[i]
    again = b[5]
    np.testing.assert_array_equal(ex["video"], again["video"])
    assert ex["caption"] == again["caption"] and isinstance(ex["spec"], ShapeSpec)
    assert ShapesSource(8, size=10)[5]["spec"] != ex["spec"]
    with pytest.raises(IndexError):
        a[10]

"""Causal 3D VAE: shapes, causality, chunked == one-shot, shape errors, training signal."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sora_jax.models.vae import CausalVAE, decode_chunked, encode_chunked, pca_init, vae_loss

VAE = CausalVAE(latent_channels=4, base_channels=8, channel_mult=(1, 2, 2, 2))


def _key(seed):
    # 'rbg' keys: compiling init with the default threefry PRNG takes ~10 s on CPU.
    return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def params():
    return jax.jit(VAE.init)(_key(0), jnp.zeros((1, 1, 16, 16, 3)))["params"]


@jax.jit
def _encode(params, video):
    return VAE.apply({"params": params}, video, method="encode")


@jax.jit
def _decode(params, z):
    return VAE.apply({"params": params}, z, method="decode")


def _video(seed, t, h=16, w=16):
    return jax.random.uniform(jax.random.key(seed), (1, t, h, w, 3), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("t", [1, 5, 9])
@pytest.mark.parametrize("hw", [(16, 24), (24, 40)])
def test_shapes(params, t, hw):
    h, w = hw
    video = jax.ShapeDtypeStruct((2, t, h, w, 3), jnp.float32)
    mean, logvar = jax.eval_shape(_encode, params, video)
    assert mean.shape == logvar.shape == (2, 1 + (t - 1) // 4, h // 8, w // 8, 4)
    assert jax.eval_shape(_decode, params, mean).shape == video.shape


def test_encoder_is_causal(params):
    video = _video(0, 17)
    noise = _video(1, 17)
    mean, _ = _encode(params, video)
    # Changing frames >= f must leave latent frames 0 .. (f - 1) // 4 untouched
    # and change the rest.
    for first_changed in (1, 5, 9):
        changed = video.at[:, first_changed:].set(noise[:, first_changed:])
        mean2, _ = _encode(params, changed)
        kept = 1 + (first_changed - 1) // 4
        np.testing.assert_allclose(mean2[:, :kept], mean[:, :kept], atol=1e-6)
        assert not np.allclose(mean2[:, kept:], mean[:, kept:], atol=1e-3)


def test_decoder_is_causal(params):
    z = jax.random.normal(jax.random.key(2), (1, 5, 2, 2, 4))
    video = _decode(params, z)
    for first_changed in (1, 3):
        video2 = _decode(params, z.at[:, first_changed:].add(1.0))
        kept = 1 + 4 * (first_changed - 1)
        np.testing.assert_allclose(video2[:, :kept], video[:, :kept], atol=1e-6)
        assert not np.allclose(video2[:, kept:], video[:, kept:], atol=1e-3)


@pytest.mark.parametrize("chunk_latents", [1, 2])
def test_chunked_matches_one_shot(params, chunk_latents):
    # 32x32 frames: at 16x16 the 2x2 latent makes GroupNorm amplify float32 rounding
    # noise (which differs between chunk shapes) to ~1e-5; in float64 the match is exact.
    video = _video(3, 17, 32, 32)
    mean, logvar = _encode(params, video)
    mean_c, logvar_c = encode_chunked(VAE, params, video, chunk_latents=chunk_latents)
    np.testing.assert_allclose(mean_c, mean, atol=1e-5)
    np.testing.assert_allclose(logvar_c, logvar, atol=1e-5)
    recon = _decode(params, mean)
    recon_c = decode_chunked(VAE, params, mean, chunk_latents=chunk_latents)
    assert recon_c.shape == video.shape
    np.testing.assert_allclose(recon_c, recon, atol=1e-5)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 6, 16, 16, 3), "video has 6 frames; the causal VAE needs 1 + 4k frames"),
        ((1, 5, 30, 16, 3), "height 30 is not divisible by 8"),
        ((1, 5, 16, 20, 3), "width 20 is not divisible by 8"),
        ((5, 16, 16, 3), "video must have shape [B, T, H, W, 3]"),
        ((1, 5, 16, 16, 4), "video must have shape [B, T, H, W, 3]"),
    ],
)
def test_bad_video_shape_raises(params, shape, message):
    video = jnp.zeros(shape)
    with pytest.raises(ValueError, match=re.escape(message)):
        VAE.apply({"params": params}, video, method="encode")
    with pytest.raises(ValueError, match=re.escape(message)):
        encode_chunked(VAE, params, video)


def test_bad_latent_shape_raises(params):
    with pytest.raises(ValueError, match="latent must have shape"):
        VAE.apply({"params": params}, jnp.zeros((1, 2, 2, 2, 3)), method="decode")


def test_training_lowers_loss(params):
    video = _video(4, 5)
    optimizer = optax.adam(1e-3)

    @jax.jit
    def step(params, opt_state, rng):
        (loss, metrics), grads = jax.value_and_grad(vae_loss, argnums=1, has_aux=True)(
            VAE, params, video, rng
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state = optimizer.init(params)
    history = []
    for i in range(25):
        params, opt_state, metrics = step(params, opt_state, _key(100 + i))
        history.append(metrics)
    assert set(history[0]) >= {"loss", "recon", "kl", "psnr"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["psnr"] > history[0]["psnr"]


def _shape_clips(n, frames=9, size=32):
    from sora_jax.data.synthetic import render, sample_spec

    rng = np.random.default_rng(0)
    clips = [render(sample_spec(rng, frames=(frames,), sizes=((size, size),))) for _ in range(n)]
    return np.stack(clips).astype(np.float32) / 127.5 - 1.0


def test_motion_weighted_pca_keeps_motion_within_a_latent_frame():
    # 16 latent channels, as the shapes job: the linear path alone (deep paths start at zero).
    vae = CausalVAE(latent_channels=16, base_channels=8, channel_mult=(1, 2, 2, 2))
    params = jax.jit(vae.init)(_key(0), jnp.zeros((1, 1, 16, 16, 3)))["params"]
    fit, test = _shape_clips(64), _shape_clips(16)[::-1]
    def within_steps(videos):  # how far the shape's centroid moves inside latent frame 1
        from sora_jax.evaluation.shapes import centroids

        tracks = [centroids(v[1:5].max(-1) > 0.0) for v in np.asarray(videos)]  # shapes are bright
        return np.nanmean([np.linalg.norm(np.diff(t, axis=0), axis=-1) for t in tracks])

    kept = {}
    for weight in (1.0, 4.0):
        p = pca_init(vae, params, fit, motion_weight=weight)
        mean, _ = vae.apply({"params": p}, test, method="encode")
        recon = vae.apply({"params": p}, mean, method="decode")
        kept[weight] = within_steps(recon) / within_steps(test)
        # The weighted encoder inverts the weighted decoder on latents (after frame 0, whose
        # group is decoded to one frame).
        z = jax.random.normal(_key(1), (2, 3, 4, 4, 16))
        again, _ = vae.apply({"params": p}, vae.apply({"params": p}, z, method="decode"), method="encode")
        np.testing.assert_allclose(again[:, 1:], z[:, 1:], atol=1e-3)
    # Plain PCA spends its components on the frames' mean: a moving shape decodes still.
    assert kept[1.0] < 0.5 < kept[4.0], kept

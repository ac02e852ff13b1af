"""Read and write uint8 [T, H, W, 3] videos (.mp4 via PyAV; .gif and .png via PIL)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from sora_jax.files import atomic_path


class VideoReadError(ValueError):
    """A video could not be read; the message is one line naming the file."""


def read_video(path, *, max_frames: int | None = None) -> np.ndarray:
    """Decode the first video stream of `path` to uint8 [T, H, W, 3] RGB."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            for frame in container.decode(video=0):
                if max_frames is not None and len(frames) >= max_frames:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    except VideoReadError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        # One readable line instead of a PyAV traceback.
        raise VideoReadError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    if not frames:
        raise VideoReadError(f"{path}: no decodable frames")
    return np.stack(frames)


def read_image(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a picture to uint8 [H, W, 3] RGB, resized to (height, width) when `size` is given."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BICUBIC)
            return np.asarray(image)
    except (OSError, ValueError) as e:  # missing, truncated or not a picture: one line naming it
        raise VideoReadError(f"{path}: {getattr(e, 'strerror', None) or e}") from None


def write_video(path, frames: np.ndarray, fps: int = 8) -> None:
    """Write uint8 [T, H, W, 3] frames atomically; the format follows the extension."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"expected non-empty uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    path = Path(path)
    ext = path.suffix.lower()
    writers = {".mp4": _write_mp4, ".gif": _write_gif, ".png": _write_png}
    if ext not in writers:
        raise ValueError(f"unsupported video extension {ext!r} (use .mp4, .gif or .png)")
    if ext == ".png" and len(frames) != 1:
        raise ValueError(f".png holds exactly 1 frame, got {len(frames)}")
    with atomic_path(path) as tmp:
        writers[ext](tmp, frames, fps)


def _write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    _, h, w, _ = frames.shape
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        # yuv420p halves chroma resolution and needs even sizes; yuv444p keeps odd sizes exact.
        stream.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
        stream.options = {"crf": "18"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def _write_gif(path: str, frames: np.ndarray, fps: int) -> None:
    # One shared 128-colour palette, duplicated into entries 128..255: PIL drops a frame
    # identical to its predecessor, so a repeated frame flips one pixel to the duplicate
    # index (same colour) to keep the frame count exact.
    t, h, w, _ = frames.shape
    q = Image.fromarray(frames.reshape(t * h, w, 3)).quantize(128, dither=Image.Dither.NONE)
    palette = (q.getpalette()[: 128 * 3] + [0] * 128 * 3)[: 128 * 3]
    idx = np.asarray(q).reshape(t, h, w).copy()
    for i in range(1, t):
        if np.array_equal(idx[i], idx[i - 1]):
            idx[i, 0, 0] ^= 128
    images = []
    for f in idx:
        im = Image.fromarray(f, mode="P")
        im.putpalette(palette * 2)
        images.append(im)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, optimize=False)


def _write_png(path: str, frames: np.ndarray, fps: int) -> None:
    Image.fromarray(frames[0]).save(path, format="PNG")

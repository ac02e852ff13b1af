"""A long 1080p test video (moving gradients and a moving square, 25 fps, H.264), written frame by
frame, for measuring `sora-jax prepare`'s memory against the video's length (docs/benchmarks.md,
"Streaming preparation").

  python docs/scripts/long_video.py --seconds=60 --output=/tmp/long/a.mp4
  echo "a moving square" > /tmp/long/a.txt
  /usr/bin/time -v sora-jax prepare --input=/tmp/long --output=/tmp/long_clips
"""

import argparse

import av
import numpy as np


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seconds", type=float, required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--height", type=int, default=1080)
  parser.add_argument("--width", type=int, default=1920)
  args = parser.parse_args()
  h, w, fps = args.height, args.width, 25
  ys, xs = np.mgrid[0:h, 0:w]
  with av.open(args.output, "w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "23"}
    for i in range(int(args.seconds * fps)):
      frame = np.empty((h, w, 3), np.uint8)
      frame[..., 0] = (xs + 4 * i) % 256
      frame[..., 1] = (ys + 2 * i) % 256
      frame[..., 2] = 128
      y, x = (3 * i) % (h - 200), (5 * i) % (w - 200)
      frame[y : y + 200, x : x + 200] = 255
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


if __name__ == "__main__":
  main()

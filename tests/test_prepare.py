"""`prepare` on the real clip plus corrupt and unusable files: clips written, the rest reported."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sora_jax.cli import run
from sora_jax.config import ConfigError
from sora_jax.data.prepare import clip_source, prepare
from sora_jax.data.video_io import write_video
from test_real_clip import CLIP


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  src = tmp_path_factory.mktemp("videos")
  shutil.copy(CLIP, src / "real.mp4")
  (src / "real.txt").write_text("a street scene\n")
  (src / "truncated.mp4").write_bytes(CLIP.read_bytes()[:20_000])
  (src / "truncated.txt").write_text("cut short")
  (src / "empty.mp4").write_bytes(b"")
  (src / "empty.txt").write_text("nothing")
  (src / "text.mp4").write_text("not a video")
  (src / "text.txt").write_text("a text file")
  write_video(src / "short.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=8)
  (src / "short.txt").write_text("too short")
  shutil.copy(CLIP, src / "uncaptioned.mp4")
  return src


def test_prepare_writes_clips_and_reports_skipped(dataset, tmp_path, capsys):
  out = tmp_path / "prepared"
  run(["sora-jax", "prepare", f"--input={dataset}", f"--output={out}", "--fps=8", "--clip_frames=17"])
  line = capsys.readouterr().out.strip()
  report = json.loads((out / "report.json").read_text())
  skipped = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
  assert set(skipped) == {"truncated.mp4", "empty.mp4", "text.mp4", "short.mp4", "uncaptioned.mp4"}
  assert skipped["uncaptioned.mp4"] == "no caption" and skipped["empty.mp4"] == "empty file"
  assert skipped["short.mp4"].startswith("too short")
  assert report["videos"] == 6 and report["videos_used"] == 1 and report["skipped_count"] == 5
  assert f"{report['clips']} clips from 1 of 6 videos" in line
  clips = clip_source(out)
  assert len(clips) == report["clips"] >= 2
  by_start = {clips[i]["start"]: clips[i] for i in range(len(clips))}  # TFDS shuffles by key
  assert sorted(by_start) == list(range(0, 17 * len(clips), 17))
  first = by_start[0]
  assert first["video"].shape == (17, 240, 294, 3) and first["video"].dtype == np.uint8
  assert first["caption"] == "a street scene" and first["source"].endswith("real.mp4") and first["fps"] == 8.0
  assert all((out / s).is_file() for s in report["shards"]) and not list(out.rglob("incomplete.*"))
  with pytest.raises(SystemExit):  # a second run into the same OUTPUT is refused, with one line
    run(["sora-jax", "prepare", f"--input={dataset}", f"--output={out}"])
  assert "already holds a prepared dataset" in capsys.readouterr().err


def test_prepare_with_no_usable_video_reports_why(dataset, tmp_path):
  """TFDS refuses an empty split: the run still ends with a report, and reading it says why."""
  src = tmp_path / "bad"
  src.mkdir()
  for name in ("empty.mp4", "empty.txt", "text.mp4", "text.txt"):
    shutil.copy(dataset / name, src / name)
  report = prepare(src, tmp_path / "out")
  assert report["clips"] == 0 and report["shards"] == [] and report["skipped_count"] == 2
  with pytest.raises(ConfigError, match="found 0"):
    clip_source(tmp_path / "out")


def test_prepare_from_a_jsonl_list(dataset, tmp_path):
  listing = tmp_path / "list.jsonl"
  listing.write_text(f'{{"path": "{dataset}/real.mp4", "caption": "a street"}}\n'
                     f'{{"path": "{dataset}/missing.mp4", "caption": "gone"}}\n')
  run(["sora-jax", "prepare", f"--input={listing}", f"--output={tmp_path / 'out'}", "--clip_frames=9"])
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert report["videos_used"] == 1 and report["skipped"][0]["reason"] == "no such file"
  assert clip_source(tmp_path / "out")[0]["video"].shape[0] == 9


def test_cache_latents_then_train_the_dit_from_them(dataset, tmp_path, capsys):
  """prepare -> a VAE stage -> cache-latents -> DiT steps on the cached real clips."""
  from configs.shapes import get_config
  from sora_jax.data.latent_cache import encoded_clips, latent_source
  from sora_jax.parallel.mesh import make_mesh
  from sora_jax.train.checkpoint import Checkpointer
  from sora_jax.train.dit_stage import train_dit
  from sora_jax.train.vae_stage import train_vae
  run(["sora-jax", "prepare", f"--input={dataset}", f"--output={tmp_path / 'clips'}", "--clip_frames=9"])
  config = get_config("tiny")
  workdir = tmp_path / "run"
  run(["sora-jax", "train", "--config=configs/shapes.py:tiny", f"--workdir={workdir}", "--vae_only"])
  assert not (workdir / "checkpoints" / "dit").exists()
  mesh = make_mesh(config.mesh)
  vae, vae_params = train_vae(config, str(workdir), mesh)  # resumes: the trained VAE
  run(["sora-jax", "cache-latents", f"--workdir={workdir}", f"--input={tmp_path / 'clips'}",
       f"--output={tmp_path / 'latents'}"])
  assert "clips encoded" in capsys.readouterr().out
  assert not list((tmp_path / "latents").glob("truncated_captions-*"))  # "a street scene" fits
  # A caption longer than the encoder takes is listed with its token count, not silently cut.
  from sora_jax.data.latent_cache import cache_latents
  from sora_jax.models.build import caption_tokens
  config.model.text.max_len = 3  # BOS + 2 words: "a street scene" needs 4
  clips = clip_source(tmp_path / "clips")
  assert cache_latents(vae, vae_params, [clips[0]], tmp_path / "short", budget=config.train.row_length,
                       patch=tuple(config.model.patch), caption_tokens=lambda c: caption_tokens(config, c),
                       max_tokens=3) == (1, 1)
  listed = json.loads((tmp_path / "short" / "truncated_captions-00000.json").read_text())
  assert listed["count"] == 1 and listed["captions"][0]["tokens"] == 4
  assert listed["captions"][0]["caption"] == "a street scene" and listed["captions"][0]["source"].endswith("real.mp4")
  config = get_config("tiny")
  latents = latent_source(tmp_path / "latents")
  first = latents[0]
  assert first["caption"] == "a street scene" and first["mean"].shape[-1] == config.vae.latent_channels
  t, h, w = first["mean"].shape[:3]
  assert t * (h // 2) * (w // 2) <= config.train.row_length and (w / h) > 1  # budget, aspect kept
  config.data.latents = str(tmp_path / "latents")
  train_dit(config, str(workdir), vae, vae_params, mesh)
  ckpt = Checkpointer(workdir / "checkpoints" / "dit")
  assert ckpt.latest_step() == config.train.steps
  ckpt.close()

  # The same clips straight from the prepared dataset, encoded as the DiT reads them: the same
  # latents as the cache holds (cache-latents on one host keeps the clips' order).
  clips = encoded_clips(tmp_path / "clips", vae, vae_params, budget=config.train.row_length,
                       patch=tuple(config.model.patch))
  assert len(clips) == len(latents) and clips.caption_at(0, None) == "a street scene"
  for i in range(len(clips)):
    np.testing.assert_allclose(clips[i][0], latents[i]["mean"], rtol=1e-4, atol=1e-5)
  config.data.latents, config.data.clips = "", str(tmp_path / "clips")
  config.train.steps += 2
  train_dit(config, str(workdir), vae, vae_params, mesh)
  ckpt = Checkpointer(workdir / "checkpoints" / "dit")
  assert ckpt.latest_step() == config.train.steps
  ckpt.close()


def test_captioners_write_a_second_caption_and_failures_are_listed(tmp_path, capsys):
  """`--captioner=shapes` describes each clip from its pixels; a captioner that fails on a clip
  leaves it its own caption and is listed, the run goes on; an unknown one is one line."""
  out = tmp_path / "shapes"
  report = prepare("shapes:3", out, clip_frames=9, clip_stride=9, captioner="shapes")
  assert report["captioner"] == "shapes" and report["caption_failures_count"] == 0
  clips = clip_source(out)
  for i in range(len(clips)):
    clip = clips[i]
    written = clip["generated_caption"]
    assert written.startswith(f"a {clip['colour']} ") and written != clip["caption"], written
    assert "of the frame" in written  # where the shape starts: something the original never says
  failing = prepare("shapes:2", tmp_path / "failing", clip_frames=9, clip_stride=9,
                    captioner="helpers:fail_on_dark_clips")
  assert failing["caption_failures_count"] >= 1 and failing["clips"] == len(clip_source(tmp_path / "failing"))
  assert all(f["reason"].startswith("ValueError") for f in failing["caption_failures"])
  with pytest.raises(SystemExit):
    run(["sora-jax", "prepare", "--input=shapes:1", f"--output={tmp_path / 'x'}", "--captioner=nothing"])
  assert "--captioner='nothing': give 'shapes'" in capsys.readouterr().err


@pytest.mark.parametrize("fps, frames, stride", [(8.0, 17, 17), (8.0, 5, 3), (8.0, 5, 9), (50.0, 9, 9)])
def test_streamed_clips_equal_whole_file_resampling(fps, frames, stride):
  """Cutting while decoding gives the clips that resampling the whole decoded file gives
  (target k = source frame round(k * source_fps / fps), k < n * fps / source_fps)."""
  from sora_jax.data.clips import cut_clips
  from sora_jax.data.video_io import read_video, stream_video
  whole = read_video(CLIP)
  stream = stream_video(CLIP)
  source_fps, streamed = stream.fps, stream.frames
  count = int(len(whole) * fps / source_fps + 1e-6)
  picks = np.minimum(np.round(np.arange(count) * source_fps / fps).astype(int), len(whole) - 1)
  resampled = whole[picks]
  expected = [(s, resampled[s:s + frames]) for s in range(0, count - frames + 1, stride)]
  got = list(cut_clips(streamed, source_fps, fps, frames, stride))
  assert [s for s, _ in got] == [s for s, _ in expected] and len(got) >= 2
  assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected))


def test_cutting_holds_about_one_clip_of_frames_whatever_the_length():
  """Memory does not grow with the video: frames are let go once their clips are out."""
  import weakref
  from sora_jax.data.clips import cut_clips
  refs, most = [], [0]

  def frames(n):
    for i in range(n):
      frame = np.full((4, 4, 3), i % 255, np.uint8)
      refs.append(weakref.ref(frame))  # freed by reference counting as soon as nothing holds it
      most[0] = max(most[0], sum(r() is not None for r in refs[-100:]))
      yield frame

  clips = sum(1 for _ in cut_clips(frames(1000), 25.0, 8.0, 17, 17))
  assert clips == int(1000 * 8 / 25) // 17 and most[0] <= 17 + 2, most[0]


def test_captions_in_other_encodings_blank_ones_and_a_size_cap(tmp_path):
  """A Latin-1 caption is read as Windows-1252 and noted (never a crash); a whitespace-only one
  is 'no caption'; --max_size caps the stored clips' longer side, aspect kept; the stored
  dataset is no larger than 1.5x its input."""
  src = tmp_path / "videos"
  src.mkdir()
  shutil.copy(CLIP, src / "cafe.mp4")
  (src / "cafe.txt").write_bytes("un caf\xe9 au coin de la rue".encode("latin-1"))
  shutil.copy(CLIP, src / "blank.mp4")
  (src / "blank.txt").write_text("  \n\t")
  out = tmp_path / "out"
  report = prepare(src, out, clip_frames=17, max_size=148)
  assert report["skipped"] == [{"path": str(src / "blank.mp4"), "reason": "no caption"}]
  assert report["notes"][0]["note"].startswith("cafe.txt is not UTF-8 (byte 0xe9 at 6): read as Windows-1252")
  clips = clip_source(out)
  assert clips[0]["caption"] == "un café au coin de la rue"
  assert clips[0]["video"].shape[1:] == (120, 148, 3)  # 240 x 294 halved, even sizes
  full = tmp_path / "full"
  prepare(src, full, clip_frames=17)
  stored = sum(p.stat().st_size for p in full.rglob("*.array_record*"))
  assert stored <= 1.5 * CLIP.stat().st_size, (stored, CLIP.stat().st_size)


def test_a_default_caption_for_videos_without_one(tmp_path, capsys):
  """--caption: footage for a VAE needs no captions; a video's own caption still wins."""
  src = tmp_path / "footage"
  src.mkdir()
  shutil.copy(CLIP, src / "a.mp4")
  shutil.copy(CLIP, src / "b.mp4")
  (src / "b.txt").write_text("its own caption")
  report = prepare(src, tmp_path / "out", clip_frames=17, default_caption="real footage")
  assert report["skipped_count"] == 0
  assert sorted({c["caption"] for c in clip_source(tmp_path / "out")}) == ["its own caption", "real footage"]
  capsys.readouterr()
  with pytest.raises(SystemExit):
    run(["sora-jax", "prepare", f"--input={src}", f"--output={tmp_path / 'x'}", "--caption= "])
  assert capsys.readouterr().err.strip() == "sora-jax: error: --caption is empty: give the text videos without a caption of their own get"


def test_relative_list_entries_climbing_out_of_its_folder_are_skipped(tmp_path):
  folder = tmp_path / "list"
  folder.mkdir()
  shutil.copy(CLIP, folder / "inside.mp4")
  shutil.copy(CLIP, tmp_path / "outside.mp4")
  (folder / "list.jsonl").write_text("\n".join(json.dumps(e) for e in [
      {"path": "inside.mp4", "caption": "kept"},
      {"path": "../outside.mp4", "caption": "climbs out"},
      {"path": "sub/../../outside.mp4", "caption": "climbs out further down"},
      {"path": str(tmp_path / "outside.mp4"), "caption": "absolute: the list's author chose it"},
  ]))
  report = prepare(folder / "list.jsonl", tmp_path / "out", clip_frames=17)
  assert report["videos_used"] == 2 and report["skipped_count"] == 2
  assert all("outside the list's folder" in s["reason"] for s in report["skipped"])


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
  import errno
  from sora_jax.data import tfds_builders
  from sora_jax.data.prepare import prepared_dirs

  def full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(tfds_builders, "encode_clip", full)
  with pytest.raises(ConfigError, match="no space left on its disk"):
    prepare("shapes:2", tmp_path / "out", clip_frames=9)
  assert prepared_dirs(tmp_path / "out") == [] and not list((tmp_path / "out").rglob("incomplete.*"))


def test_filters_scene_cuts_size_and_length(tmp_path):
  """No clip spans a scene cut (clips restart at the cut); videos under --min_size or
  --min_seconds are skipped with the reason."""
  src = tmp_path / "videos"
  src.mkdir()
  frames = np.zeros((40, 48, 64, 3), np.uint8)
  frames[:20, ..., 0], frames[20:, ..., 2] = 200, 200  # a red scene, then a blue one
  for t in range(40):
    frames[t, 20:26, t:t + 6] = 255  # a white square moving right in both
  write_video(src / "cut.mp4", frames, fps=8)
  (src / "cut.txt").write_text("two scenes")
  plain = prepare(src, tmp_path / "plain", fps=8, clip_frames=9, clip_stride=9)
  cut = prepare(src, tmp_path / "cut", fps=8, clip_frames=9, clip_stride=9, scene_cut=0.2)
  starts = lambda out: sorted(c["start"] for c in map(clip_source(out).__getitem__, range(len(clip_source(out)))))
  assert starts(tmp_path / "plain") == [0, 9, 18, 27] and plain["scene_cuts"] == 0
  assert starts(tmp_path / "cut") == [0, 9, 20, 29] and cut["scene_cuts"] == 1
  small = prepare(src, tmp_path / "small", fps=8, clip_frames=9, min_size=64)
  assert small["skipped"][0]["reason"] == "64x48 is under --min_size=64"
  short = prepare(src, tmp_path / "short", fps=8, clip_frames=9, min_seconds=6)
  assert short["skipped"][0]["reason"].endswith("s is under --min_seconds=6")


def _clips_by_source(output, split):
  clips = clip_source(output, split)
  return sorted((c["source"], c["start"], c["caption"], c["generated_caption"], c["video"].tobytes())
                for c in (clips[i] for i in range(len(clips))))


def test_beam_direct_runner_build_equals_the_plain_build(dataset, tmp_path, monkeypatch):
  """The same folder (two good videos, four bad files) through Apache Beam's DirectRunner in two
  worker processes: the same clips in the same splits, the same report."""
  import os

  # The workers import the captioner entry point as a cluster's would: from their own path.
  tests = str(Path(__file__).parent)
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
  src = tmp_path / "videos"
  shutil.copytree(dataset, src)
  shutil.copy(CLIP, src / "second.mp4")
  (src / "second.txt").write_text("the same street again")
  common = dict(clip_frames=9, clip_stride=17, validation_fraction=0.1, captioner="helpers:describe_frames")
  plain = prepare(src, tmp_path / "plain", **common)
  run(["sora-jax", "prepare", f"--input={src}", f"--output={tmp_path / 'beam'}", "--clip_frames=9",
       "--clip_stride=17", "--validation_fraction=0.1", "--captioner=helpers:describe_frames",
       "--beam_runner=DirectRunner",
       "--beam_options=--direct_num_workers=2 --direct_running_mode=multi_processing"])
  beam = json.loads((tmp_path / "beam" / "report.json").read_text())
  assert beam.pop("beam_runner") == "DirectRunner" and plain.pop("beam_runner") is None
  assert beam == plain and plain["skipped_count"] == 5 and len(plain["validation_videos"]) == 1
  for split in ("train", "validation"):
    assert _clips_by_source(tmp_path / "beam", split) == _clips_by_source(tmp_path / "plain", split)
  assert not (tmp_path / "beam" / ".video_logs.json").exists()


def test_beam_with_no_usable_video_reports_why(dataset, tmp_path):
  src = tmp_path / "bad"
  src.mkdir()
  for name in ("empty.mp4", "empty.txt", "text.mp4", "text.txt"):
    shutil.copy(dataset / name, src / name)
  report = prepare(src, tmp_path / "out", beam_runner="DirectRunner")
  assert report["clips"] == 0 and report["skipped_count"] == 2 and not list((tmp_path / "out").rglob("incomplete.*"))


def test_an_unknown_beam_runner_is_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit):
    run(["sora-jax", "prepare", "--input=shapes:1", f"--output={tmp_path}", "--beam_runner=NoSuchRunner"])
  assert "--beam_runner=NoSuchRunner: " in capsys.readouterr().err

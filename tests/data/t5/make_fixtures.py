"""Makes the T5 / UMT5 parity fixtures of tests/test_t5.py: tiny random encoders saved by
transformers (config.json, model.safetensors), their tokenizers, and the reference outputs of
transformers + torch on CPU (reference.npz). The tests read these files only; run this again
(with `pip install torch transformers sentencepiece tokenizers`) to remake them:

  python tests/data/t5/make_fixtures.py

t5_tiny: T5 v1.1 (gated GELU, one shared relative position bias), tokenizer spiece.model.
umt5_tiny: UMT5 (a relative position bias per layer), tokenizer tokenizer.json only.
"""

import io
import json
import os
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import transformers

HERE = Path(__file__).resolve().parent
MAX_LEN = 16
CAPTIONS = [
    "a red circle moves left",
    "",  # classifier-free guidance's empty caption: one </s>
    "A small blue square drifts slowly to the right across a textured background, then stops.",
    "zwei Kreise, ünïcödé and 123 numbers",
    "green",
]
CORPUS = [
    "a red circle moves left",
    "a blue square moves right on a plain background",
    "a green triangle moves up slowly",
    "a yellow star moves down quickly across a textured background",
    "the camera pans over a city street at night",
    "two people walk along the beach at sunset",
    "zwei Kreise bewegen sich nach links",
    "numbers 0 1 2 3 4 5 6 7 8 9 and symbols , . ! ?",
] * 20


def sentencepiece_model(vocab_size=80):
  """A tiny unigram model with T5's special ids: <pad> 0, </s> 1, <unk> 2."""
  buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS),
      model_writer=buffer,
      vocab_size=vocab_size,
      model_type="unigram",
      pad_id=0,
      eos_id=1,
      unk_id=2,
      bos_id=-1,
      pad_piece="<pad>",
      eos_piece="</s>",
      unk_piece="<unk>",
      character_coverage=1.0,
  )
  return buffer.getvalue()


def make(name, config_class, model_class, keep_spiece):
  folder = HERE / name
  folder.mkdir(exist_ok=True)
  spiece = folder / "spiece.model"
  spiece.write_bytes(sentencepiece_model())
  tokenizer = transformers.T5Tokenizer.from_pretrained(folder, extra_ids=0)
  torch.manual_seed(0)
  config = config_class(
      vocab_size=len(tokenizer),
      d_model=32,
      d_kv=8,
      d_ff=48,
      num_layers=3,
      num_heads=4,
      relative_attention_num_buckets=8,
      relative_attention_max_distance=20,
      feed_forward_proj="gated-gelu",
      dropout_rate=0.0,
  )
  model = model_class(config).eval()
  model.save_pretrained(folder, safe_serialization=True)
  tokenizer.save_pretrained(folder)
  for extra in ("special_tokens_map.json", "tokenizer_config.json", "added_tokens.json", "generation_config.json"):
    if (folder / extra).exists():
      os.remove(folder / extra)
  if keep_spiece:
    (folder / "tokenizer.json").unlink(missing_ok=True)
  else:
    spiece.unlink()
  batch = tokenizer(CAPTIONS, max_length=MAX_LEN, truncation=True, padding="max_length", return_tensors="pt")
  with torch.no_grad():
    hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
  np.savez(
      folder / "reference.npz",
      captions=np.array(CAPTIONS),
      ids=batch.input_ids.numpy().astype(np.int32),
      mask=batch.attention_mask.numpy().astype(bool),
      hidden=hidden.numpy().astype(np.float32),
  )
  (folder / "versions.json").write_text(
      json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}, indent=1) + "\n"
  )


if __name__ == "__main__":
  make("t5_tiny", transformers.T5Config, transformers.T5EncoderModel, keep_spiece=True)
  make("umt5_tiny", transformers.UMT5Config, transformers.UMT5EncoderModel, keep_spiece=False)

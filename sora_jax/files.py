"""Writing files so that a killed run never leaves a half-written one behind."""
import contextlib
import json
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
  """Yield a temporary path beside `path` (same extension, for writers that go by it); on
  success it is renamed onto `path` (atomic on one filesystem), on failure removed."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
  try:
    yield str(tmp)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_json(path, obj):
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(obj, f, indent=1)

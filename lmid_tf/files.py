"""Writing a file (or folder) so that a reader never sees half of it.

Everything lmid-tf writes goes to a temporary name beside its destination
and is renamed over it only when whole: a crash, a kill -9 or a full disk
leaves the previous version, never a torn one.
"""

import contextlib
import os
import shutil


@contextlib.contextmanager
def replacing(path: str, suffix: str = ''):
  """Yields a temporary path beside `path`; renames it to `path` on success
  and removes it on failure. `suffix` keeps an extension that a writer
  needs (Keras wants '.keras', matplotlib infers the format from it)."""
  tmp = f'{path}.tmp-{os.getpid()}{suffix}'
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
  with replacing(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def write_text(path: str, text: str, newline=None) -> None:
  with replacing(path) as tmp, open(tmp, 'w', newline=newline) as f:
    f.write(text)

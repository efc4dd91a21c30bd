"""Photos' bytes beside the catalogue, named by their content hash.

`<catalogue>.photos/ab/abcdef....jpg`: no user-given name is ever used as a
path, and a photo is written to a temporary name and renamed, so a kill
never leaves half a file under a real name.
"""

import hashlib
import os

from lmid_tf import files


def hash_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def hash_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def store_photo(cat, data: bytes, suffix: str) -> str:
  """Keeps a photo's bytes under its content hash beside the catalogue
  (`<catalogue>.photos/ab/abcd....jpg`); no user-given name is used."""
  suffix = suffix.lower() if suffix.lower() in (
      '.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp') else '.bin'
  digest = hash_bytes(data)
  folder = os.path.join(os.path.abspath(cat.path) + '.photos', digest[:2])
  os.makedirs(folder, exist_ok=True)
  target = os.path.join(folder, digest + suffix)
  if not os.path.exists(target):
    files.write_bytes(target, data)
  return target


def photo_file(cat, photo_row: dict):
  """The file holding a photo's bytes: its copy in the photo store, else
  its original path; None when neither exists."""
  folder = os.path.join(os.path.abspath(cat.path) + '.photos',
                        photo_row['content_hash'][:2])
  if os.path.isdir(folder):
    for name in os.listdir(folder):
      if name.split('.')[0] == photo_row['content_hash'] and (
          '.tmp-' not in name):
        return os.path.join(folder, name)
  path = photo_row['original_path']
  return path if os.path.isfile(path) else None

r"""A folder per individual -> annotation rows (identity-only, K = 0).

  photos/                      photos/
    nyala_017/                   train/nyala_017/a.jpg ...
      a.jpg  b.jpg               test/nyala_102/c.jpg ...
    nyala_018/ ...             (or gallery/ query/, or train/ gallery/ query/)

The identity is the folder name (photos in subfolders of it belong to it).
Top-level folders named train, test, gallery or query are split folders and
are taken as they are; `test` is split into gallery and query encounters by
the protocol (splits.py). Without split folders the converter applies the
paper's protocol.

With `viewpoints`, a photo whose file name contains exactly one of them
(`..._leftphoto.jpg` -> left) gets that viewpoint. With `encounter_pattern`,
a regular expression, its first group in the file name names the photo's
encounter within its identity (`^(\d+)_` makes `14_leftphoto.jpg` and
`14_rightphoto.jpg` one encounter).
"""

import os
import re
from typing import Sequence

from lmid_tf.data import annotations

SPLIT_FOLDERS = ('train', 'test', 'gallery', 'query')


def viewpoint_from_name(name: str, viewpoints: Sequence[str]) -> str:
  stem = os.path.splitext(os.path.basename(name))[0].lower()
  found = [v for v in viewpoints if v.lower() in stem]
  return found[0] if len(found) == 1 else ''


def _files_under(folder: str) -> list:
  found = []
  for directory, subdirs, files in os.walk(folder):
    subdirs.sort()
    found.extend(os.path.join(directory, f) for f in sorted(files))
  return found


def encounter_from_name(name: str, identity: str, pattern: str) -> str:
  found = re.search(pattern, os.path.basename(name)) if pattern else None
  return f'{identity}/{found.group(1)}' if found and found.groups() else ''


def read_tree(root: str, viewpoints: Sequence[str] = (),
              encounter_pattern: str = '') -> tuple:
  """Returns (rows, rejects, split_folders): rows carry the given split
  ('train', 'test', 'gallery', 'query') when the tree has split folders,
  else None. Whether a file is an image is decided later, by its content.

  Raises annotations.AnnotationError when the tree holds no identity folder
  or mixes split folders with identity folders.
  """
  if not os.path.isdir(root):
    raise annotations.AnnotationError(f'{root}: --images is not a folder')
  top = sorted(e for e in os.listdir(root)
               if os.path.isdir(os.path.join(root, e)))
  splits = [t for t in top if t.lower() in SPLIT_FOLDERS]
  if splits and len(splits) != len(top):
    others = [t for t in top if t not in splits]
    raise annotations.AnnotationError(
        f'{root}: has split folders {splits} and other folders {others[:5]}; '
        'put every identity folder inside a split folder, or use none')
  rows, rejects = [], []
  groups = [(s, os.path.join(root, s)) for s in splits] or [(None, root)]
  for split, folder in groups:
    for entry in sorted(os.listdir(folder)):
      full = os.path.join(folder, entry)
      relative = os.path.relpath(full, root)
      if not os.path.isdir(full):
        rejects.append(annotations.Reject(
            relative, relative, 'not in an identity folder (the identity is '
            'the name of the folder a photo is in)'))
        continue
      for path in _files_under(full):
        relative = os.path.relpath(path, root)
        rows.append(annotations.Annotation(
            where=relative, path=relative, identity=entry, points=(),
            split=split.lower() if split else None,
            viewpoint=viewpoint_from_name(path, viewpoints),
            encounter=encounter_from_name(path, entry, encounter_pattern)))
  if not rows:
    raise annotations.AnnotationError(
        f'{root}: no photos in identity folders (expected '
        f'{root}/<identity>/<photo>, optionally inside train/ test/ or '
        'gallery/ query/)')
  return rows, rejects, bool(splits)

"""Photos and their annotation rows, read for a catalogue or a query."""

import os

import numpy as np
import tensorflow as tf

from lmid_tf.data import annotations
from lmid_tf.data import overlay
from lmid_tf.data import records

THUMBNAIL = 64


def thumbnail(image_u8: np.ndarray) -> np.ndarray:
  tile = overlay.colourise(image_u8.astype(np.float32) / 255.0)
  return tf.image.resize(tile, [THUMBNAIL, THUMBNAIL]).numpy().astype(np.uint8)


def read_photos(paths: list) -> list:
  photos = []
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such photo')
    with open(path, 'rb') as f:
      photos.append(f.read())
  return photos


def _row_files(rows: list, root: str) -> list:
  """The file of each annotation row; ValueError naming the row whose path
  leads outside `root`."""
  files = []
  for row in rows:
    try:
      files.append(annotations.resolve_path(root, row.path))
    except ValueError as e:
      raise ValueError(f'{row.where}: {e}') from None
  return files


def read_photo_annotations(csv_path: str, images_root: str,
                           num_landmarks: int, identity_field: str = 'identity',
                           path_field: str = ''):
  """Photos + pixel landmarks from an annotation CSV (converter format).

  Returns (encoded list, landmarks [N, K, 2], visible [N, K], names, paths).
  Raises ValueError naming the file and line of the first bad row.
  """
  _, rows, rejects = annotations.read(csv_path, identity_field,
                                      path_field=path_field)
  if rejects:
    raise ValueError(f'{rejects[0].where}: {rejects[0].reason}')
  files = _row_files(rows, images_root or os.path.dirname(
      os.path.abspath(csv_path)))
  for row, path in zip(rows, files):
    if not os.path.isfile(path):
      raise ValueError(f'{row.where}: missing file {path}')
  points, visible = annotations.landmark_arrays(rows, num_landmarks) if (
      num_landmarks) else (None, None)
  return (read_photos(files), points, visible, [r.identity for r in rows],
          [r.path for r in rows])


def gallery_files(gallery: str, split: str = 'gallery',
                  images_root: str = '', identity_field: str = 'identity',
                  path_field: str = '') -> list:
  """The files a catalogue is built from, for its fingerprint."""
  if os.path.isdir(gallery):
    return records.read_metadata(gallery).shard_paths(gallery, split)
  rows = annotations.read(gallery, identity_field, path_field=path_field)[1]
  files = _row_files(rows, images_root or os.path.dirname(
      os.path.abspath(gallery)))
  return [gallery] + [f for f in files if os.path.isfile(f)]

"""The review sheet: each query photo beside its ranked candidates."""

import os

import cv2
import numpy as np

from lmid_tf.data import overlay
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import photos as photos_lib

_VERDICT_COLOURS = {'known': (40, 150, 40), 'new': (0, 120, 230),
                    'uncalibrated': (110, 110, 110), 'empty': (110, 110, 110),
                    'not_found': (40, 40, 200)}
_TILE = 2 * photos_lib.THUMBNAIL


def _captioned(tile: np.ndarray, landmarks, visible, lines: list,
               frame=None) -> np.ndarray:
  tile = cv2.resize(tile, (_TILE, _TILE), interpolation=cv2.INTER_NEAREST)
  if landmarks is not None and len(landmarks):
    tile = overlay.draw_landmarks(tile, landmarks, visible, radius=4)
  if frame is not None:
    cv2.rectangle(tile, (0, 0), (_TILE - 1, _TILE - 1), frame, 3)
  caption = np.full((16 * len(lines) + 4, _TILE, 3), 255, np.uint8)
  for i, line in enumerate(lines):
    cv2.putText(caption, line[:22], (3, 14 + 16 * i),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
  return np.concatenate([tile, caption], axis=0)


def review_sheet(images, landmarks, visible, records_: list,
                 catalogue: catalogue_lib.Catalogue) -> np.ndarray:
  """One row per query photo, for a person to decide from.

  A verdict band ("known: id00060" / "new individual? nearest 0.91 >
  threshold 0.79"), then the query with its landmarks, then its top-k
  catalogue photos, each with identity, distance and landmarks; the nearest
  is framed in the verdict's colour.
  """
  columns = 1 + max(1, max(len(r['matches']) for r in records_))
  rows = []
  for image, points, vis, record in zip(images, landmarks, visible, records_):
    colour = _VERDICT_COLOURS[record['verdict']]
    tiles = [_captioned(photos_lib.thumbnail(image), points, vis,
                        ['query', os.path.basename(record['photo'])],
                        frame=(0, 0, 0))]
    for match in record['matches']:
      g = int(np.flatnonzero(catalogue.paths == match['catalogue_photo'])[0])
      tiles.append(_captioned(
          catalogue.thumbnails[g], catalogue.landmarks[g],
          catalogue.visible[g],
          [f'{match["rank"]}. {match["identity"]}',
           f'distance {match["distance"]:.3f}'],
          frame=colour if match['rank'] == 1 else None))
    while len(tiles) < columns:
      tiles.append(np.full_like(tiles[0], 255))
    body = overlay.grid(tiles, columns)
    band = np.full((26, body.shape[1], 3), colour, np.uint8)
    cv2.putText(band, record['text'][:110], (6, 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    rows.append(np.concatenate([band, body], axis=0))
  return np.concatenate(rows, axis=0)

"""Photos into the catalogue: a CSV of photos and sightings, or a dataset.

The CSV needs a path column; every other column is optional: the identity,
`date` (YYYY-MM-DD or an ISO date-time), `location`, `lat`, `lon`,
`viewpoint`, `photographer`, landmark pairs `<name>_x`, `<name>_y` (photo
pixels, blank = not visible), and any further column, kept with the photo
and exported again. A bad row (missing or unreadable file, a bad date, an
out-of-range coordinate, an unknown individual, a landmark outside the
photo) is reported with its line and reason and the rest go in; blank
coordinates stay empty. Photos already in the catalogue (same content) are
skipped.

An unknown identity is a bad row unless `new_individuals` is set: a typo
must not quietly make a second individual.
"""

import csv
import os
import struct

import cv2
import numpy as np
import tensorflow as tf

from lmid_tf.data import annotations
from lmid_tf.data import records
from lmid_tf.identification import bridge
from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification import photo_store

MAX_PIXELS = 50_000_000   # larger is refused: a decompression bomb
_KNOWN = {'date', 'taken_at', 'location', 'lat', 'lon', 'latitude',
          'longitude', 'viewpoint', 'photographer'}


def image_size(data: bytes):
  """(width, height) from a PNG or JPEG header without decoding, else
  None."""
  if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 24:
    return struct.unpack('>II', data[16:24])
  if data[:2] == b'\xff\xd8':
    at = 2
    while at + 9 < len(data):
      if data[at] != 0xFF:
        return None
      marker = data[at + 1]
      length = struct.unpack('>H', data[at + 2:at + 4])[0]
      if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA,
                    0xCB, 0xCD, 0xCE, 0xCF):
        height, width = struct.unpack('>HH', data[at + 5:at + 9])
        return width, height
      at += 2 + length
  return None


def checked_image(data: bytes) -> tuple:
  """(decoded image, width, height); InvalidInput for a file that is not
  an image, is truncated, or is too large to decode safely."""
  size = image_size(data)
  if size and size[0] * size[1] > MAX_PIXELS:
    raise database.InvalidInput(
        f'{size[0]} x {size[1]} pixels is more than {MAX_PIXELS:,}: refused '
        '(a decompression bomb?)')
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise database.InvalidInput('not an image, or a truncated one')
  # OpenCV fills a cut-off JPEG with grey; its end marker is missing then
  # (cameras may append data after it, hence the search of the tail).
  if data[:2] == b'\xff\xd8' and b'\xff\xd9' not in data[-65536:]:
    raise database.InvalidInput('truncated JPEG (no end marker)')
  return image, image.shape[1], image.shape[0]


def _landmark_names(header) -> list:
  return [c[:-2] for c in header if c.endswith('_x') and
          f'{c[:-2]}_y' in header]


def _points(row: dict, names: list):
  if not names:
    return None
  points = []
  for name in names:
    x, y = row.get(f'{name}_x', '').strip(), row.get(f'{name}_y', '').strip()
    if not x and not y:
      points.append(None)
      continue
    try:
      points.append([float(x), float(y)])
    except ValueError:
      raise database.InvalidInput(f'landmark {name}: ({x!r}, {y!r}) is not '
                                  'a number pair') from None
  return points


def _first(row: dict, *keys):
  for key in keys:
    if row.get(key, '').strip():
      return row[key]
  return None


def _import_row(cat, row: dict, root: str, names: list, fields: dict,
                new_individuals: bool, cache: dict) -> bool:
  """Stores one row; True when the photo was new. Raises InvalidInput."""
  path = (row.get(fields['path']) or '').strip()
  if not path:
    raise database.InvalidInput(f'no {fields["path"]}')
  try:
    file = annotations.resolve_path(root, path)
  except ValueError as e:
    raise database.InvalidInput(str(e)) from None
  if not os.path.isfile(file):
    raise database.InvalidInput(f'missing file {file}')
  with open(file, 'rb') as f:
    data = f.read()
  _, width, height = checked_image(data)
  name = (row.get(fields['identity']) or '').strip()
  points = _points(row, names)
  skip = _KNOWN | {fields['path'], fields['identity']} | {
      f'{n}_{a}' for n in names for a in 'xy'}
  try:
    with cat.transaction():   # a savepoint: a refused row leaves nothing
      photo_id, created = database.add_photo(
          cat, photo_store.hash_bytes(data), file, width=width, height=height,
          taken_at=_first(row, 'date', 'taken_at'),
          location=row.get('location'),
          latitude=_first(row, 'lat', 'latitude'),
          longitude=_first(row, 'lon', 'longitude'),
          photographer=row.get('photographer'),
          viewpoint=row.get('viewpoint'),
          extra={k: v for k, v in row.items() if k and k not in skip and v})
      if not created:
        return False
      annotation_id = database.add_annotation(
          cat, photo_id, landmarks=points, source='imported',
          set_by=bridge.IMPORTER)
      if name:
        individual = bridge.individual_id(cat, name, new_individuals, cache)
        if individual is None:
          raise database.InvalidInput(
              f'unknown individual {name!r} (import with --new_individuals '
              'to create it)')
        identities.assign(cat, annotation_id, individual, bridge.IMPORTER,
                          reason='import')
  except database.InvalidInput:
    cache.pop(name, None)   # an individual made in the savepoint is gone
    raise
  return True


def import_csv(cat: database.Catalogue, csv_path: str, images_root: str = '',
               identity_field: str = 'identity', path_field: str = 'path',
               new_individuals: bool = False) -> dict:
  """{'added', 'existing', 'rejects': [(where, reason)]}."""
  root = images_root or os.path.dirname(os.path.abspath(csv_path))
  fields = {'path': path_field or 'path', 'identity': identity_field}
  counts = {'added': 0, 'existing': 0, 'rejects': []}
  cache = {}
  try:
    f = open(csv_path, newline='', encoding='utf-8-sig')
  except OSError as e:
    raise database.InvalidInput(f'{csv_path}: {e.strerror}') from None
  with f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    if fields['path'] not in header:
      raise database.InvalidInput(f'{csv_path}: no {fields["path"]!r} column '
                                  f'(columns: {", ".join(header)})')
    names = _landmark_names(header)
    rows = list(reader)
  line = 1
  with cat.transaction():
    for row in rows:
      line += 1
      try:
        added = _import_row(cat, row, root, names, fields, new_individuals,
                            cache)
      except database.InvalidInput as e:
        counts['rejects'].append((f'{csv_path}:{line}', str(e)))
        continue
      counts['added' if added else 'existing'] += 1
  return counts


def import_dataset(cat: database.Catalogue, folder: str, splits=()) -> dict:
  """A converted dataset folder (TFRecords): its photos go into the
  catalogue's photo store, with landmarks and identities."""
  metadata = records.read_metadata(folder)
  counts = {'added': 0, 'existing': 0, 'rejects': []}
  cache = {}
  for split in splits or sorted(metadata.splits):
    _, serialized = records.read_split(folder, split)
    with cat.transaction():
      for index, raw in enumerate(serialized):
        example = {k: v.numpy() for k, v in records.parse(
            tf.constant(raw), metadata.num_landmarks).items()}
        where = f'{folder} {split} record {index}'
        try:
          with cat.transaction():
            added = _import_record(cat, example, split, cache)
        except database.InvalidInput as e:
          counts['rejects'].append((where, str(e)))
          continue
        counts['added' if added else 'existing'] += 1
  return counts


def _import_record(cat, example: dict, split: str, cache: dict) -> bool:
  data = bytes(example['encoded'])
  _, width, height = checked_image(data)
  photo_store.store_photo(cat, data, '.png' if data[:4] == b'\x89PNG' else
                       '.jpg')
  photo_id, created = database.add_photo(
      cat, photo_store.hash_bytes(data), example['path'].decode(), width=width,
      height=height, extra={'split': split})
  if not created:
    return False
  points = [[float(np.clip(x, 0, 1)) * width, float(np.clip(y, 0, 1)) *
             height] if v else None
            for (x, y), v in zip(example['landmarks'], example['visible'])]
  # A converter's predicted landmarks stay marked as such for the desk.
  source = ('predicted' if example['landmark_source'] == b'predicted' else
            'imported')
  annotation_id = database.add_annotation(
      cat, photo_id, landmarks=points or None, source=source,
      set_by=bridge.IMPORTER)
  identities.assign(cat, annotation_id, bridge.individual_id(
      cat, example['name'].decode(), True, cache), bridge.IMPORTER,
                    reason='import')
  return True


def import_source(cat: database.Catalogue, source: str, images_root: str = '',
                  identity_field: str = 'identity', path_field: str = 'path',
                  new_individuals: bool = False) -> dict:
  """An .npz catalogue, a dataset folder or a CSV, by what `source` is."""
  if source.endswith('.npz'):
    counts = bridge.import_npz(cat, source, images_root)
    counts['rejects'] = []
    return counts
  if os.path.isdir(source):
    return import_dataset(cat, source)
  return import_csv(cat, source, images_root, identity_field, path_field,
                    new_individuals)

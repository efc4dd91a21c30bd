"""The catalogue database: photos, annotations, individuals, reviews.

One SQLite file (WAL, foreign keys on), tables in `schema`. Every write runs
in one transaction (`Catalogue.transaction`), so a kill leaves a decision
either recorded or not. Reviews and identity events are append-only: an undo
is a new review that supersedes the old one. An annotation's current
individual is `annotations.individual_id`; `identity_events` is its log.

The API (stable; the review web app builds on it). A `Catalogue` is one
connection: open one per thread (`open` is cheap), close it when done.

  cat = database.open('season.sqlite')             # creates / upgrades
  # photos and annotations (this module)
  photo_id, created = database.add_photo(cat, content_hash, original_path,
      width=, height=, taken_at='2026-05-01', location='north bay',
      latitude=None, longitude=None, photographer=, viewpoint='left',
      extra={'survey': 'S1'})                       # O(1); dedupes by hash
  photo_store.store_photo(cat, data_bytes, '.jpg') -> path under <cat>.photos/
  photo_store.photo_file(cat, photo_row) -> the file to show (store/original)
  annotation_id = database.add_annotation(cat, photo_id, box=None,
      landmarks=[[x, y] | None, ...], source='clicked', set_by='ana')
  database.set_landmarks(cat, annotation_id, landmarks, source, set_by)
      # drops the annotation's embeddings: they were of the old landmarks
  database.set_embedding(cat, annotation_id, model, vector)
  database.set_thumbnail(cat, annotation_id, png_bytes)
  database.photo(cat, photo_id), database.annotation(cat, annotation_id),
  database.individual(cat, individual_id | name)     -> dict or NotFound
  database.threshold(cat, model), database.set_threshold(cat, model, value)
  database.check_consistency(cat) -> [problems]      # [] when sound
  database.set_viewpoint(cat, photo_id, 'right'), database.models(cat)
  # individuals (identities.py): create_individual, rename, set_notes,
  #   assign, merge, split, live, photos_of, individuals, events
  # reviews (reviews.py): record_decision (optimistic: `replaces`), undo,
  #   queue (by 'confidence' or 'date'), current_decision, history, describe
  # search (search.py): candidates, rank_vector, refresh_nearest (fills the
  #   queue's confidence), ApproximateIndex, recall_at_k
  # exports (export.py): sightings (also an individual's timeline), export
  #   (sightings.csv, capture_history.csv / .inp), capture_history, mark_inp
  # imports (importer.py): import_source, import_csv, import_dataset,
  #   checked_image (not an image / truncated / decompression bomb);
  #   bridge.py: import_npz, import_catalogue, to_catalogue
  # model keys are catalogue.model_fingerprint(model_path)

Errors are `CatalogueError` (a ValueError) subclasses with a message fit to
show a person: `NotFound`, `DuplicateName`, `InvalidInput`, and
`AlreadyDecided` (`.review` holds the decision that won).
"""

import contextlib
import datetime
import json
import os
import sqlite3

import numpy as np

from lmid_tf.identification import schema
from lmid_tf.identification import values
from lmid_tf.identification.errors import (  # pylint: disable=unused-import
    AlreadyDecided, CatalogueError, DuplicateName, InvalidInput, NotFound)

LANDMARK_SOURCES = ('clicked', 'predicted', 'imported')


def _utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y-%m-%dT%H:%M:%S.%fZ')


# Tests replace it for exact timestamps.
clock = _utc_now


class Catalogue:
  """One connection to a catalogue file."""

  def __init__(self, path: str, connection: sqlite3.Connection):
    self.path = path
    self.connection = connection
    self._depth = 0

  def execute(self, sql: str, parameters=()) -> sqlite3.Cursor:
    return self.connection.execute(sql, parameters)

  def rows(self, sql: str, parameters=()) -> list:
    return [dict(r) for r in self.connection.execute(sql, parameters)]

  def row(self, sql: str, parameters=()):
    found = self.connection.execute(sql, parameters).fetchone()
    return dict(found) if found is not None else None

  @contextlib.contextmanager
  def transaction(self):
    """All or nothing. Nested uses are savepoints inside the outer one, so
    an import can put many photos in one transaction and still drop one
    bad row alone."""
    if self._depth:
      name = f'sp{self._depth}'
      self.execute(f'SAVEPOINT {name}')
      self._depth += 1
      try:
        yield self
      except BaseException:
        self.execute(f'ROLLBACK TO {name}')
        raise
      finally:
        self._depth -= 1
        self.execute(f'RELEASE {name}')
      return
    # IMMEDIATE takes the write lock first: two writers queue up instead of
    # both reading a state and one failing at its first write.
    self.execute('BEGIN IMMEDIATE')
    self._depth = 1
    try:
      yield self
    except BaseException:
      self._depth = 0
      self.execute('ROLLBACK')
      raise
    self._depth = 0
    self.execute('COMMIT')

  def close(self) -> None:
    self.connection.close()

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.close()


def open(path: str, busy_timeout_s: float = 30.0) -> Catalogue:   # pylint: disable=redefined-builtin
  """Opens (creating or upgrading) the catalogue at `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise NotFound(f'{path}: folder {folder} does not exist')
  connection = sqlite3.connect(path, timeout=busy_timeout_s,
                               isolation_level=None)
  try:
    connection.row_factory = sqlite3.Row
    connection.execute('PRAGMA journal_mode = WAL')
    connection.execute('PRAGMA foreign_keys = ON')
    connection.execute('PRAGMA synchronous = FULL')
    schema.upgrade(connection)
  except sqlite3.DatabaseError as e:
    connection.close()
    raise CatalogueError(f'{path}: not a catalogue database ({e})') from None
  except ValueError as e:
    connection.close()
    raise CatalogueError(f'{path}: {e}') from None
  return Catalogue(path, connection)


# ---- photos, annotations, embeddings ---------------------------------------------

def _location_id(cat: Catalogue, name):
  name = values.text(name)
  if name is None:
    return None
  cat.execute('INSERT OR IGNORE INTO locations (name) VALUES (?)', (name,))
  return cat.execute('SELECT id FROM locations WHERE name = ?',
                     (name,)).fetchone()[0]


def add_photo(cat: Catalogue, content_hash: str, original_path: str, *,
              width=None, height=None, taken_at=None, location=None,
              latitude=None, longitude=None, photographer=None,
              viewpoint=None, extra=None) -> tuple:
  """(photo id, True) for a new photo, (its id, False) when a photo with
  this content hash is already in (nothing is changed then)."""
  taken_at = values.parse_date(taken_at, 'date')
  latitude = values.parse_coordinate(latitude, 'lat', 90)
  longitude = values.parse_coordinate(longitude, 'lon', 180)
  for name, value in (('width', width), ('height', height)):
    if value is not None and (int(value) != value or value <= 0):
      raise InvalidInput(f'{name}: {value!r} is not a positive whole number')
  with cat.transaction():
    found = cat.execute('SELECT id FROM photos WHERE content_hash = ?',
                        (content_hash,)).fetchone()
    if found:
      return found[0], False
    cursor = cat.execute(
        'INSERT INTO photos (content_hash, original_path, width, height, '
        'taken_at, location_id, latitude, longitude, photographer, '
        'viewpoint, extra, added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)',
        (content_hash, str(original_path), width, height, taken_at,
         _location_id(cat, location), latitude, longitude,
         values.text(photographer), values.text(viewpoint),
         json.dumps(extra or {}, sort_keys=True), clock()))
    return cursor.lastrowid, True


def set_viewpoint(cat: Catalogue, photo_id: int, viewpoint) -> None:
  with cat.transaction():
    photo(cat, photo_id)
    cat.execute('UPDATE photos SET viewpoint = ? WHERE id = ?',
                (values.text(viewpoint), photo_id))


def photo(cat: Catalogue, photo_id: int) -> dict:
  found = cat.row('SELECT p.*, l.name AS location FROM photos p LEFT JOIN '
                  'locations l ON l.id = p.location_id WHERE p.id = ?',
                  (photo_id,))
  if found is None:
    raise NotFound(f'no photo {photo_id}')
  found['extra'] = json.loads(found['extra'])
  return found


def _check_source(source) -> None:
  if source not in LANDMARK_SOURCES:
    raise InvalidInput(f'landmark source {source!r}: one of '
                       f'{", ".join(LANDMARK_SOURCES)}')


def add_annotation(cat: Catalogue, photo_id: int, *, box=None,
                   landmarks=None, source=None, set_by=None) -> int:
  with cat.transaction():
    shown = photo(cat, photo_id)
    points = values.check_landmarks(landmarks, shown['width'], shown['height'])
    if points is not None:
      _check_source(source)
    now = clock()
    cursor = cat.execute(
        'INSERT INTO annotations (photo_id, box, landmarks, landmarks_source,'
        ' landmarks_set_by, landmarks_set_at, created_at) VALUES '
        '(?,?,?,?,?,?,?)',
        (photo_id, json.dumps(list(box)) if box is not None else None, points,
         source if points else None, set_by if points else None,
         now if points else None, now))
    return cursor.lastrowid


def set_landmarks(cat: Catalogue, annotation_id: int, landmarks, source: str,
                  set_by: str) -> None:
  """New landmarks; the annotation's embeddings (of the old ones) go."""
  _check_source(source)
  if values.blank(set_by):
    raise InvalidInput('landmarks need the name of who set them')
  with cat.transaction():
    shown = photo(cat, annotation(cat, annotation_id)['photo_id'])
    points = values.check_landmarks(landmarks, shown['width'], shown['height'])
    cat.execute('UPDATE annotations SET landmarks = ?, landmarks_source = ?, '
                'landmarks_set_by = ?, landmarks_set_at = ? WHERE id = ?',
                (points, source, set_by, clock(), annotation_id))
    cat.execute('DELETE FROM embeddings WHERE annotation_id = ?',
                (annotation_id,))


def annotation(cat: Catalogue, annotation_id: int) -> dict:
  found = cat.row('SELECT a.*, i.name AS individual FROM annotations a LEFT '
                  'JOIN individuals i ON i.id = a.individual_id WHERE a.id = ?',
                  (annotation_id,))
  if found is None:
    raise NotFound(f'no annotation {annotation_id}')
  for key in ('box', 'landmarks'):
    found[key] = json.loads(found[key]) if found[key] is not None else None
  return found


def set_embedding(cat: Catalogue, annotation_id: int, model: str,
                  vector) -> None:
  vector = np.asarray(vector, '<f4').reshape(-1)
  if not np.all(np.isfinite(vector)):
    raise InvalidInput(f'annotation {annotation_id}: embedding is not finite')
  with cat.transaction():
    other = cat.execute('SELECT length(vector) FROM embeddings WHERE model = ?'
                        ' LIMIT 1', (model,)).fetchone()
    if other and other[0] != vector.nbytes:
      raise InvalidInput(f'embedding of {len(vector)} values; model {model} '
                         f'has {other[0] // 4}')
    annotation(cat, annotation_id)
    cat.execute('INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)',
                (annotation_id, model, vector.tobytes(), clock()))


def embedding(cat: Catalogue, annotation_id: int, model: str):
  found = cat.execute('SELECT vector FROM embeddings WHERE annotation_id = ? '
                      'AND model = ?', (annotation_id, model)).fetchone()
  return np.frombuffer(found[0], '<f4') if found else None


def set_thumbnail(cat: Catalogue, annotation_id: int, png: bytes) -> None:
  with cat.transaction():
    cat.execute('INSERT OR REPLACE INTO thumbnails VALUES (?, ?)',
                (annotation_id, png))


def thumbnail(cat: Catalogue, annotation_id: int):
  found = cat.execute('SELECT png FROM thumbnails WHERE annotation_id = ?',
                      (annotation_id,)).fetchone()
  return found[0] if found else None


def individual(cat: Catalogue, key) -> dict:
  """By id (int) or live name (str)."""
  if isinstance(key, str):
    found = cat.row('SELECT * FROM individuals WHERE name = ? AND retired_at '
                    'IS NULL', (key,))
  else:
    found = cat.row('SELECT * FROM individuals WHERE id = ?', (int(key),))
  if found is None:
    raise NotFound(f'no individual {key!r}')
  return found


# ---- settings --------------------------------------------------------------------

def setting(cat: Catalogue, key: str, default=None):
  found = cat.execute('SELECT value FROM settings WHERE key = ?',
                      (key,)).fetchone()
  return found[0] if found else default


def set_setting(cat: Catalogue, key: str, value) -> None:
  with cat.transaction():
    cat.execute('INSERT OR REPLACE INTO settings VALUES (?, ?)', (key, value))


def threshold(cat: Catalogue, model: str) -> float:
  """The calibrated "new individual?" distance; nan before calibration."""
  return float(setting(cat, f'threshold:{model}', 'nan'))


def set_threshold(cat: Catalogue, model: str, value: float) -> None:
  set_setting(cat, f'threshold:{model}', repr(float(value)))


def models(cat: Catalogue) -> list:
  return [r[0] for r in cat.execute(
      'SELECT DISTINCT model FROM embeddings ORDER BY model')]


def check_consistency(cat: Catalogue) -> list:
  """What is wrong with the file ([] when sound): SQLite's own checks, and
  that identities and reviews agree."""
  problems = [r[0] for r in cat.execute('PRAGMA integrity_check')
              if r[0] != 'ok']
  problems += [f'foreign key: {tuple(r)}' for r in cat.execute(
      'PRAGMA foreign_key_check')]
  checks = {
      'annotation assigned to a retired individual':
          'SELECT a.id FROM annotations a JOIN individuals i ON '
          'i.id = a.individual_id WHERE i.retired_at IS NOT NULL',
      'active same/new decision whose annotation has no individual':
          "SELECT r.id FROM reviews r JOIN annotations a ON "
          "a.id = r.query_annotation_id WHERE r.decision IN ('same', 'new') "
          'AND NOT EXISTS (SELECT 1 FROM reviews s WHERE s.supersedes = r.id)'
          ' AND a.individual_id IS NULL',
      'two live individuals with one name':
          'SELECT name FROM individuals WHERE retired_at IS NULL GROUP BY '
          'name HAVING count(*) > 1',
  }
  for what, sql in checks.items():
    problems += [f'{what}: {r[0]}' for r in cat.execute(sql)]
  return problems

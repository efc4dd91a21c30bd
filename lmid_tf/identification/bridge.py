"""Between the in-memory `catalogue.Catalogue` and the database.

`identify index` embeds a gallery into a `Catalogue` and stores it with
`import_catalogue`; an old `.npz` file goes in with `import_npz`; `calibrate`
and `query` rank against `to_catalogue(cat, model)`, the database's
identified annotations seen as a `Catalogue` (thumbnails read lazily).
"""

import json
import os

import cv2
import numpy as np

from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification import photo_store

IMPORTER = 'import'   # the reviewer name of imported identities
BATCH = 500           # photos per transaction


def npz_model(catalogue: catalogue_lib.Catalogue) -> str:
  """The model key of a catalogue's embeddings (older files have none)."""
  return catalogue.model or f'npz:{catalogue.fingerprint[:16]}'


def _photo_identity(cat, path: str, images_root: str, thumbnail) -> tuple:
  """(content hash, (width, height) or None, path to store): the file's,
  when it exists; else that of the one photo already stored under this
  original path (a dataset folder imported by importer.import_dataset);
  else a hash of the path and thumbnail."""
  file = os.path.join(images_root, path) if images_root else path
  if os.path.isfile(file):
    image = cv2.imread(file, cv2.IMREAD_UNCHANGED)
    size = (image.shape[1], image.shape[0]) if image is not None else None
    return photo_store.hash_file(file), size, os.path.abspath(file)
  stored = cat.rows('SELECT content_hash, width, height FROM photos WHERE '
                    'original_path = ? LIMIT 2', (path,))
  if len(stored) == 1:
    return stored[0]['content_hash'], None, path
  return photo_store.hash_bytes(path.encode() + b'\0' + np.ascontiguousarray(
      thumbnail).tobytes()), None, path


def individual_id(cat: database.Catalogue, name: str, create: bool,
                  cache: dict):
  """The live individual called `name` (created when `create`), or None."""
  if name not in cache:
    try:
      cache[name] = database.individual(cat, name)['id']
    except database.NotFound:
      if not create:
        return None
      cache[name] = identities.create_individual(cat, name, IMPORTER,
                                                 reason='import')
  return cache[name]


def import_catalogue(cat: database.Catalogue,
                     catalogue: catalogue_lib.Catalogue, images_root: str = '',
                     model: str = '') -> dict:
  """Stores every photo of `catalogue` (photos already in are matched by
  content hash and only get this model's embedding). Returns counts."""
  model = model or npz_model(catalogue)
  counts = dict(added=0, existing=0, individuals=0)
  names = {}
  before = len(identities.individuals(cat))
  for start in range(0, len(catalogue.names), BATCH):
    with cat.transaction():
      for g in range(start, min(start + BATCH, len(catalogue.names))):
        path = str(catalogue.paths[g])
        content_hash, size, stored_path = _photo_identity(
            cat, path, images_root, catalogue.thumbnails[g])
        photo_id, created = database.add_photo(
            cat, content_hash, stored_path, width=size and size[0],
            height=size and size[1])
        counts['added' if created else 'existing'] += 1
        annotation_id = _first_annotation(cat, photo_id)
        if annotation_id is None:
          points = None
          if size and catalogue.landmarks.shape[1]:
            points = [[float(x) * size[0], float(y) * size[1]] if v else None
                      for (x, y), v in zip(catalogue.landmarks[g],
                                           catalogue.visible[g])]
          annotation_id = database.add_annotation(
              cat, photo_id, landmarks=points, source='imported',
              set_by=IMPORTER)
          ok, png = cv2.imencode('.png', catalogue.thumbnails[g])
          if ok:
            database.set_thumbnail(cat, annotation_id, png.tobytes())
          identities.assign(cat, annotation_id, individual_id(
              cat, str(catalogue.names[g]), True, names), IMPORTER,
                            reason='import')
        database.set_embedding(cat, annotation_id, model,
                               catalogue.embeddings[g])
  if np.isfinite(catalogue.threshold):
    database.set_threshold(cat, model, catalogue.threshold)
  counts['individuals'] = len(identities.individuals(cat)) - before
  counts['model'] = model
  return counts


def _first_annotation(cat: database.Catalogue, photo_id: int):
  found = cat.execute('SELECT min(id) FROM annotations WHERE photo_id = ?',
                      (photo_id,)).fetchone()
  return found[0]


def import_npz(cat: database.Catalogue, path: str, images_root: str = ''
               ) -> dict:
  return import_catalogue(cat, catalogue_lib.load(path), images_root)


class _LazyThumbnails:
  """catalogue.thumbnails[g] read from the database when asked for."""

  def __init__(self, cat, annotation_ids, size: int):
    self._cat, self._ids, self._size = cat, annotation_ids, size

  def __len__(self):
    return len(self._ids)

  def __getitem__(self, g):
    png = database.thumbnail(self._cat, int(self._ids[g]))
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) if (
        png) else None
    if image is None:
      return np.zeros((self._size, self._size, 3), np.uint8)
    return image


def to_catalogue(cat: database.Catalogue, model: str,
                 num_landmarks: int = 0, thumbnail_size: int = 64
                 ) -> catalogue_lib.Catalogue:
  """The identified annotations with embeddings of `model`, as a
  Catalogue (paths are the photos' original paths; landmarks normalised
  to the photo where its size is known)."""
  rows = cat.rows(
      'SELECT a.id, a.landmarks, e.vector, i.name, p.original_path, p.width, '
      'p.height FROM embeddings e JOIN annotations a ON a.id = '
      'e.annotation_id JOIN individuals i ON i.id = a.individual_id JOIN '
      'photos p ON p.id = a.photo_id WHERE e.model = ? ORDER BY a.id',
      (model,))
  landmarks = np.zeros((len(rows), num_landmarks, 2), np.float32)
  visible = np.zeros((len(rows), num_landmarks), np.float32)
  for g, row in enumerate(rows):
    points = json.loads(row['landmarks']) if row['landmarks'] else []
    if len(points) == num_landmarks and row['width'] and row['height']:
      for k, point in enumerate(points):
        if point is not None:
          landmarks[g, k] = (point[0] / row['width'], point[1] / row['height'])
          visible[g, k] = 1.0
  dim = len(rows[0]['vector']) // 4 if rows else 0
  return catalogue_lib.Catalogue(
      embeddings=np.frombuffer(b''.join(r['vector'] for r in rows),
                               '<f4').reshape(len(rows), dim),
      names=np.array([r['name'] for r in rows], str),
      paths=np.array([r['original_path'] for r in rows], str),
      thumbnails=_LazyThumbnails(cat, [r['id'] for r in rows],
                                 thumbnail_size),
      landmarks=landmarks, visible=visible,
      fingerprint=database.setting(cat, f'gallery_fingerprint:{model}', ''),
      threshold=database.threshold(cat, model), model=model)

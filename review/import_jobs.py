"""A batch import running beside the pages, one photo at a time.

Each photo is one transaction (checked, stored under its content hash,
photo + annotation rows, the CSV's individual), so a bad file, a bad CSV
row or a kill loses that photo alone; the job's state (how far, what was
refused and why) is what the Import page polls.
"""

import dataclasses
import os
import threading
import time
import uuid

from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification import importer
from lmid_tf.identification import photo_store
from lmid_tf.identification import values
from review import compute
from review import sighting_csv



@dataclasses.dataclass
class Job:
  id: str
  total: int
  reviewer: str
  done: int = 0
  added: list = dataclasses.field(default_factory=list)     # annotation ids
  already: list = dataclasses.field(default_factory=list)   # file names
  refused: list = dataclasses.field(default_factory=list)   # (name, reason)
  finished: bool = False
  started: float = dataclasses.field(default_factory=time.time)

  def state(self) -> dict:
    return {'id': self.id, 'total': self.total, 'done': self.done,
            'added': len(self.added), 'already': self.already,
            'refused': [{'file': n, 'reason': r} for n, r in self.refused],
            'finished': self.finished}


def start(desk, items: list, csv_rows: dict, reviewer: str,
          problems=(), skipped=()) -> Job:
  """Runs the import of `items` [(file name, bytes | server path)] in a
  thread, with `csv_rows` as sighting_csv.read gives them; returns its Job
  at once. `skipped`: the folder's files that are
  not photos, listed as refused so that none goes missing unnoticed."""
  job = Job(id=uuid.uuid4().hex[:12], total=len(items), reviewer=reviewer)
  job.refused.extend(('CSV', p) for p in problems)
  job.refused.extend((name, 'not a photo (JPEG, PNG, GIF or BMP by its '
                      'name): not opened') for name in skipped)
  # A row whose file name is mistyped would otherwise be dropped unseen.
  csv_rows, unused = sighting_csv.match_rows([n for n, _ in items], csv_rows)
  job.refused.extend(('CSV', p) for p in unused)
  desk.jobs[job.id] = job
  thread = threading.Thread(target=_run, args=(desk, job, items, csv_rows),
                            daemon=True)
  thread.start()
  return job


def run_now(desk, items: list, csv_rows: dict, reviewer: str) -> Job:
  """The same import in this thread (the command line, tests)."""
  job = Job(id=uuid.uuid4().hex[:12], total=len(items), reviewer=reviewer)
  csv_rows, unused = sighting_csv.match_rows([n for n, _ in items], csv_rows)
  job.refused.extend(('CSV', p) for p in unused)
  _run(desk, job, items, csv_rows)
  return job


def _run(desk, job: Job, items: list, csv_rows: dict) -> None:
  cat = database.open(desk.config.catalogue)
  try:
    for name, source in items:
      try:
        data = source if isinstance(source, bytes) else _read(source)
        job.added.append(import_photo(cat, desk, name, data,
                                      csv_rows.get(name), job.reviewer))
      except _AlreadyIn as e:
        job.already.append(f'{name} ({e})')
      except database.CatalogueError as e:
        job.refused.append((name, str(e)))
      except OSError as e:
        job.refused.append((name, f'cannot read it ({e.strerror})'))
      job.done += 1
    _refresh_nearest(cat, desk)
  finally:
    job.finished = True
    cat.close()


def _read(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


class _AlreadyIn(Exception):
  pass


def import_photo(cat, desk, name: str, data: bytes, row, reviewer: str
                 ) -> int:
  """One photo in: returns its annotation id. CatalogueError (not a photo,
  too large, a bad CSV value, an unknown individual, a landmark outside the
  photo) or _AlreadyIn; nothing is stored then."""
  limit = desk.config.max_upload_bytes
  if len(data) > limit:
    raise database.InvalidInput(
        f'{len(data) / 2**20:.1f} MB is above the upload limit of '
        f'{limit / 2**20:g} MB (--max_upload_mb)')
  # Not an image, truncated, or a decompression bomb: refused here.
  _, width, height = importer.checked_image(data)
  row = row or {'fields': {}, 'landmarks': None, 'individual': None,
                'error': None, 'line': None}
  where = f'CSV line {row["line"]}: ' if row['line'] else ''
  if row['error']:
    raise database.InvalidInput(row['error'])
  if row['landmarks']:
    # Checked here for the message: by the CSV's names ("apex"), not index.
    try:
      values.checked_points(row['landmarks'], width, height,
                            desk.embedder.landmark_names)
    except database.InvalidInput as e:
      raise database.InvalidInput(f'{where}{e}') from None
  with cat.transaction():
    try:
      individual = (database.individual(cat, row['individual'])['id']
                    if row['individual'] else None)
    except database.NotFound:
      raise database.InvalidInput(
          f'{where}unknown individual {row["individual"]!r}: create it by '
          'naming a new individual on the Match page, or leave the column '
          'empty') from None
    try:
      photo_id, created = database.add_photo(
          cat, photo_store.hash_bytes(data), name, width=width, height=height,
          **row['fields'])
      if not created:
        raise _AlreadyIn(f'already in the catalogue as photo {photo_id}')
      annotation_id = database.add_annotation(
          cat, photo_id, landmarks=row['landmarks'],
          source='imported' if row['landmarks'] else None, set_by=reviewer)
    except database.InvalidInput as e:
      raise database.InvalidInput(f'{where}{e}') from None
    if individual is not None:
      identities.assign(cat, annotation_id, individual, reviewer,
                        reason='import')
    # Stored last: a refused row leaves no file behind either.
    photo_store.store_photo(cat, data, _suffix(data))
  try:
    compute.ensure_embedding(cat, desk.embedder, annotation_id,
                             lambda: data)
  except Exception as e:  # pylint: disable=broad-except
    # The photo is in; its embedding is computed again when it is opened.
    print(f'review: annotation {annotation_id} not embedded yet: {e}')
  return annotation_id


def _suffix(data: bytes) -> str:
  if data[:2] == b'\xff\xd8':
    return '.jpg'
  return '.png' if data[:4] == b'\x89PNG' else '.bmp' if data[:2] == b'BM' else (
      '.bin')


def _refresh_nearest(cat, desk) -> None:
  """The queue's "most confident first" order needs each waiting photo's
  nearest known individual."""
  from lmid_tf.identification import search
  search.refresh_nearest(cat, desk.model)


PHOTO_SUFFIXES = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')


def folder_items(root: str, folder: str) -> tuple:
  """([(name, path)] of the photos in `folder`, [names of the other files,
  not opened]), `folder` being one the user typed, relative to the desk's
  --photo_root; a name is the file's path inside `folder` ('/' between
  subfolders), so that camera1/IMG_1.JPG and camera2/IMG_1.JPG stay two.
  ValueError when it leads outside the root (nothing outside is ever opened
  or listed)."""
  base = os.path.realpath(root)
  target = os.path.realpath(os.path.join(base, folder.strip().lstrip('/')))
  if target != base and not target.startswith(base + os.sep):
    raise ValueError(f'{folder!r} is outside the folder the desk may import '
                     f'from ({base})')
  if not os.path.isdir(target):
    raise ValueError(f'{folder!r}: no such folder under {base}')
  items, skipped = [], []
  for here, dirs, files in os.walk(target):
    dirs.sort()
    for name in sorted(files):
      path = os.path.realpath(os.path.join(here, name))
      if not path.startswith(base + os.sep) or name.startswith('.'):
        continue   # a link out of the root
      inside = os.path.relpath(os.path.join(here, name), target).replace(
          os.sep, '/')
      if os.path.splitext(name)[1].lower() in PHOTO_SUFFIXES:
        items.append((inside, path))
      else:
        skipped.append(inside)
  return items, skipped

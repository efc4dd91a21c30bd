"""Individuals: create, rename, assign, merge, split; every change logged.

Each change is one transaction that also appends an identity event (who,
why, when), so the log and the current state cannot disagree. A merge moves
the absorbed individual's annotations and retires it (`merged_into`); it is
never deleted, so old reviews still point at a real row. Names are unique
among live individuals.
"""

import json

from lmid_tf.identification import database
from lmid_tf.identification.database import (Catalogue, DuplicateName,
                                             InvalidInput)


def _event(cat: Catalogue, kind: str, reviewer: str, *, individual_id=None,
           other_individual_id=None, annotation_id=None, review_id=None,
           detail=None, reason='') -> None:
  cat.execute(
      'INSERT INTO identity_events (kind, individual_id, other_individual_id,'
      ' annotation_id, review_id, detail, reviewer, reason, at) VALUES '
      '(?,?,?,?,?,?,?,?,?)',
      (kind, individual_id, other_individual_id, annotation_id, review_id,
       json.dumps(detail or {}, sort_keys=True), reviewer, reason or '',
       database.clock()))


def _reviewer(reviewer) -> str:
  if not reviewer or not str(reviewer).strip():
    raise InvalidInput('a reviewer name is needed for every change')
  return str(reviewer).strip()


def _free_name(cat: Catalogue, name) -> str:
  name = str(name or '').strip()
  if not name:
    raise InvalidInput('an individual needs a name')
  taken = cat.row('SELECT id FROM individuals WHERE name = ? AND retired_at '
                  'IS NULL', (name,))
  if taken:
    raise DuplicateName(f'an individual called {name!r} already exists '
                        f'(individual {taken["id"]}); choose another name or '
                        'match the photo to it')
  return name


def live(cat: Catalogue, individual_id):
  """The live individual an id stands for now (following merges), or None
  when it was retired without a successor."""
  seen = set()
  while individual_id is not None and individual_id not in seen:
    seen.add(individual_id)
    row = database.individual(cat, individual_id)
    if row['retired_at'] is None:
      return individual_id
    individual_id = row['merged_into']
  return None


def _live_row(cat: Catalogue, individual_id) -> dict:
  row = database.individual(cat, individual_id)
  if row['retired_at'] is not None:
    merged = (f' into individual {row["merged_into"]}' if row['merged_into']
              else '')
    raise InvalidInput(f'individual {row["name"]!r} was retired (merged'
                       f'{merged}) on {row["retired_at"]}')
  return row


def create_individual(cat: Catalogue, name: str, reviewer: str,
                      notes: str = '', reason: str = '') -> int:
  reviewer = _reviewer(reviewer)
  with cat.transaction():
    name = _free_name(cat, name)
    cursor = cat.execute('INSERT INTO individuals (name, notes, created_at) '
                         'VALUES (?, ?, ?)', (name, notes or '',
                                              database.clock()))
    _event(cat, 'create', reviewer, individual_id=cursor.lastrowid,
           detail={'name': name}, reason=reason)
    return cursor.lastrowid


def rename(cat: Catalogue, individual_id: int, new_name: str, reviewer: str,
           reason: str = '') -> None:
  reviewer = _reviewer(reviewer)
  with cat.transaction():
    old = _live_row(cat, individual_id)['name']
    if str(new_name).strip() == old:
      return
    new_name = _free_name(cat, new_name)
    cat.execute('UPDATE individuals SET name = ? WHERE id = ?',
                (new_name, individual_id))
    _event(cat, 'rename', reviewer, individual_id=individual_id,
           detail={'from': old, 'to': new_name}, reason=reason)


def set_notes(cat: Catalogue, individual_id: int, notes: str) -> None:
  with cat.transaction():
    _live_row(cat, individual_id)
    cat.execute('UPDATE individuals SET notes = ? WHERE id = ?',
                (notes or '', individual_id))


def assign(cat: Catalogue, annotation_id: int, individual_id, reviewer: str,
           reason: str = '', review_id=None) -> None:
  """Sets (or with None clears) an annotation's individual."""
  reviewer = _reviewer(reviewer)
  with cat.transaction():
    before = database.annotation(cat, annotation_id)['individual_id']
    if individual_id is not None:
      _live_row(cat, individual_id)
    if before == individual_id:
      return
    cat.execute('UPDATE annotations SET individual_id = ? WHERE id = ?',
                (individual_id, annotation_id))
    _event(cat, 'assign', reviewer, individual_id=individual_id,
           other_individual_id=before, annotation_id=annotation_id,
           review_id=review_id, detail={'from': before, 'to': individual_id},
           reason=reason)


def retire_if_empty(cat: Catalogue, individual_id: int, reviewer: str,
                    reason: str) -> bool:
  """Retires an individual left without photos (its name becomes free)."""
  used = cat.execute('SELECT 1 FROM annotations WHERE individual_id = ? '
                     'LIMIT 1', (individual_id,)).fetchone()
  if used:
    return False
  cat.execute('UPDATE individuals SET retired_at = ? WHERE id = ?',
              (database.clock(), individual_id))
  _event(cat, 'retire', reviewer, individual_id=individual_id, reason=reason)
  return True


def merge(cat: Catalogue, keep_id: int, absorb_id: int, reviewer: str,
          reason: str = '') -> list:
  """Moves every annotation of `absorb_id` to `keep_id` and retires
  `absorb_id`. Returns the moved annotation ids."""
  reviewer = _reviewer(reviewer)
  if int(keep_id) == int(absorb_id):
    raise InvalidInput('cannot merge an individual with itself')
  with cat.transaction():
    keep, absorb = _live_row(cat, keep_id), _live_row(cat, absorb_id)
    moved = [r[0] for r in cat.execute(
        'SELECT id FROM annotations WHERE individual_id = ? ORDER BY id',
        (absorb_id,))]
    cat.execute('UPDATE annotations SET individual_id = ? WHERE '
                'individual_id = ?', (keep_id, absorb_id))
    notes = '\n'.join(n for n in (keep['notes'], absorb['notes'] and
                                  f'(from {absorb["name"]}) {absorb["notes"]}')
                      if n)
    cat.execute('UPDATE individuals SET notes = ? WHERE id = ?',
                (notes, keep_id))
    cat.execute('UPDATE individuals SET retired_at = ?, merged_into = ? '
                'WHERE id = ?', (database.clock(), keep_id, absorb_id))
    _event(cat, 'merge', reviewer, individual_id=keep_id,
           other_individual_id=absorb_id,
           detail={'moved': moved, 'absorbed_name': absorb['name'],
                   'kept_name': keep['name']}, reason=reason)
    return moved


def split(cat: Catalogue, individual_id: int, annotation_ids, new_name: str,
          reviewer: str, reason: str = '') -> int:
  """Moves some annotations of an individual to a new one; returns its id.
  At least one annotation must stay and every one named must belong."""
  reviewer = _reviewer(reviewer)
  annotation_ids = sorted({int(a) for a in annotation_ids})
  if not annotation_ids:
    raise InvalidInput('a split needs the photos that go to the new '
                       'individual')
  with cat.transaction():
    source = _live_row(cat, individual_id)
    owned = {r[0] for r in cat.execute(
        'SELECT id FROM annotations WHERE individual_id = ?', (individual_id,))}
    strangers = [a for a in annotation_ids if a not in owned]
    if strangers:
      raise InvalidInput(f'annotations {strangers} are not photos of '
                         f'{source["name"]!r}')
    if len(owned) == len(annotation_ids):
      raise InvalidInput(f'a split must leave {source["name"]!r} at least '
                         'one photo (to rename it, use rename)')
    new_name = _free_name(cat, new_name)
    new_id = cat.execute('INSERT INTO individuals (name, created_at) VALUES '
                         '(?, ?)', (new_name, database.clock())).lastrowid
    _event(cat, 'create', reviewer, individual_id=new_id,
           detail={'name': new_name}, reason=reason)
    cat.connection.executemany(
        'UPDATE annotations SET individual_id = ? WHERE id = ?',
        [(new_id, a) for a in annotation_ids])
    _event(cat, 'split', reviewer, individual_id=individual_id,
           other_individual_id=new_id,
           detail={'moved': annotation_ids, 'new_name': new_name},
           reason=reason)
    return new_id


def individuals(cat: Catalogue, include_retired: bool = False) -> list:
  """[{id, name, notes, photos, first_seen, last_seen, ...}] by name."""
  where = '' if include_retired else 'WHERE i.retired_at IS NULL'
  return cat.rows(
      'SELECT i.*, count(a.id) AS photos, min(p.taken_at) AS first_seen, '
      'max(p.taken_at) AS last_seen FROM individuals i LEFT JOIN annotations '
      'a ON a.individual_id = i.id LEFT JOIN photos p ON p.id = a.photo_id '
      f'{where} GROUP BY i.id ORDER BY i.name')


def photos_of(cat: Catalogue, individual_id: int) -> list:
  """The individual's annotations with their photos, oldest first (photos
  without a date last)."""
  database.individual(cat, individual_id)
  return cat.rows(
      'SELECT a.id AS annotation_id, a.landmarks_source, p.id AS photo_id, '
      'p.original_path, p.content_hash, p.taken_at, l.name AS location, '
      'p.latitude, p.longitude, p.viewpoint FROM annotations a JOIN photos p '
      'ON p.id = a.photo_id LEFT JOIN locations l ON l.id = p.location_id '
      'WHERE a.individual_id = ? ORDER BY p.taken_at IS NULL, p.taken_at, '
      'a.id', (individual_id,))


def events(cat: Catalogue, individual_id=None, annotation_id=None) -> list:
  """The identity log, oldest first, optionally of one individual (as
  either side) or one annotation."""
  clauses, parameters = [], []
  if individual_id is not None:
    clauses.append('(individual_id = ? OR other_individual_id = ?)')
    parameters += [individual_id, individual_id]
  if annotation_id is not None:
    clauses.append('annotation_id = ?')
    parameters.append(annotation_id)
  where = f'WHERE {" AND ".join(clauses)}' if clauses else ''
  rows = cat.rows(f'SELECT * FROM identity_events {where} ORDER BY id',
                  parameters)
  for row in rows:
    row['detail'] = json.loads(row['detail'])
  return rows

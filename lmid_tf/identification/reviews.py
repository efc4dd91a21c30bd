"""Review decisions: record, undo, the queue. Append-only.

A query-level decision (`same`, `new`, `cannot_tell`, `unidentifiable`)
settles a query annotation; at most one is active (not superseded) per query.
`different` is a pair-level note (this query is not that candidate) and
settles nothing. An undo is a new review of decision `undo` superseding the
old one; `supersedes` is UNIQUE, so a review is superseded at most once even
when two reviewers race.

Optimistic concurrency: the caller says what it saw. `replaces=None` means
"the query was undecided when I looked"; `replaces=R` means "I am changing
decision R". If the database holds something else, `AlreadyDecided` says who
decided what and when, and nothing is written.
"""

from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification.database import (AlreadyDecided, Catalogue,
                                             InvalidInput, NotFound)

QUERY_DECISIONS = ('same', 'new', 'cannot_tell', 'unidentifiable')
DECISIONS = QUERY_DECISIONS + ('different',)
_ACTIVE = 'NOT EXISTS (SELECT 1 FROM reviews s WHERE s.supersedes = r.id)'
_QUERY_LEVEL = "r.decision IN ('same', 'new', 'cannot_tell', 'unidentifiable')"


def review(cat: Catalogue, review_id: int) -> dict:
  found = cat.row('SELECT r.*, i.name AS candidate_individual FROM reviews r '
                  'LEFT JOIN individuals i ON i.id = r.candidate_individual_id '
                  'WHERE r.id = ?', (review_id,))
  if found is None:
    raise NotFound(f'no review {review_id}')
  return found


def describe(row: dict) -> str:
  """'same as Stripe', 'new individual Stripe', 'cannot tell', ..."""
  name = row.get('candidate_individual') or row.get('candidate_individual_id')
  return {'same': f'same as {name}', 'new': f'new individual {name}',
          'different': f'different from {name}', 'undo': 'undo',
          'cannot_tell': 'cannot tell',
          'unidentifiable': 'unidentifiable'}[row['decision']]


def current_decision(cat: Catalogue, query_annotation_id: int):
  """The query's active query-level review (a dict), or None."""
  found = cat.row(
      'SELECT r.id FROM reviews r WHERE r.query_annotation_id = ? AND '
      f'{_QUERY_LEVEL} AND {_ACTIVE} ORDER BY r.id DESC LIMIT 1',
      (query_annotation_id,))
  return review(cat, found['id']) if found else None


def _superseded_by(cat: Catalogue, review_id: int):
  found = cat.row('SELECT id FROM reviews WHERE supersedes = ?', (review_id,))
  return review(cat, found['id']) if found else None


def _refuse(query_annotation_id: int, winner: dict) -> AlreadyDecided:
  return AlreadyDecided(
      f'annotation {query_annotation_id} was already decided by '
      f'{winner["reviewer"]} at {winner["decided_at"]}: {describe(winner)}. '
      'Nothing was changed; reload to see it.', winner)


def _check_seen(cat: Catalogue, query_annotation_id: int, replaces):
  """The active decision, if it is the one the caller saw; else raises."""
  active = current_decision(cat, query_annotation_id)
  if replaces is None and active is None:
    return None
  if active is not None and replaces == active['id']:
    return active
  if active is not None:
    raise _refuse(query_annotation_id, active)
  later = _superseded_by(cat, replaces) if replaces is not None else None
  if later is None:
    raise InvalidInput(f'review {replaces} is not a decision of annotation '
                       f'{query_annotation_id}')
  raise AlreadyDecided(
      f'review {replaces} was already undone by {later["reviewer"]} at '
      f'{later["decided_at"]}; annotation {query_annotation_id} is undecided '
      'now. Nothing was changed; reload to see it.', later)


def _revert_target(cat: Catalogue, old: dict):
  """Where the query's individual goes back to when `old` is undone;
  InvalidInput when a merge or split has moved it since."""
  if old['decision'] not in ('same', 'new'):
    return None
  now = database.annotation(cat, old['query_annotation_id'])['individual_id']
  assigned = identities.live(cat, old['candidate_individual_id'])
  if now != assigned:
    raise InvalidInput(
        f'annotation {old["query_annotation_id"]} was moved to another '
        'individual after this decision (a merge, split or later match); '
        'decide it again instead of undoing')
  previous = old['previous_individual_id']
  return identities.live(cat, previous) if previous is not None else None


def _revert(cat: Catalogue, old: dict, reviewer: str, review_id: int):
  if old['decision'] not in ('same', 'new'):
    return
  target = _revert_target(cat, old)
  identities.assign(cat, old['query_annotation_id'], target, reviewer,
                    reason=f'review {old["id"]} taken back',
                    review_id=review_id)
  created = old['candidate_individual_id']
  if old['decision'] == 'new' and identities.live(cat, created) == created:
    identities.retire_if_empty(cat, created, reviewer,
                               f'its only photo was undone (review '
                               f'{old["id"]})')


def _insert(cat: Catalogue, values: dict) -> int:
  columns = ', '.join(values)
  marks = ', '.join('?' for _ in values)
  return cat.execute(f'INSERT INTO reviews ({columns}) VALUES ({marks})',
                     tuple(values.values())).lastrowid


def record_decision(cat: Catalogue, query_annotation_id: int, decision: str,
                    reviewer: str, *, candidate_annotation_id=None,
                    candidate_individual_id=None, new_name=None, notes='',
                    model=None, distance=None, rank=None, threshold=None,
                    replaces=None, reason: str = '') -> dict:
  """Records one decision and applies it to the query's identity.

  same: the query joins `candidate_individual_id` (or the individual of
    `candidate_annotation_id`). new: a new individual `new_name` (a
    duplicate name is refused) gets the query. different: a note about that
    candidate only. cannot_tell / unidentifiable: settle without identity.
  Returns the recorded review (with 'candidate_individual' its name).
  Raises AlreadyDecided, DuplicateName, InvalidInput, NotFound.
  """
  if decision not in DECISIONS:
    raise InvalidInput(f'decision {decision!r}: one of {", ".join(DECISIONS)}')
  reviewer = identities._reviewer(reviewer)   # pylint: disable=protected-access
  with cat.transaction():
    query = database.annotation(cat, query_annotation_id)
    if candidate_annotation_id is not None:
      candidate = database.annotation(cat, candidate_annotation_id)
      if candidate_individual_id is None:
        candidate_individual_id = candidate['individual_id']
    row = dict(query_annotation_id=query_annotation_id,
               candidate_annotation_id=candidate_annotation_id,
               decision=decision, reviewer=reviewer,
               decided_at=database.clock(), model=model,
               distance=None if distance is None else float(distance),
               rank=rank, threshold=None if threshold is None or (
                   threshold != threshold) else float(threshold),
               reason=reason or '')
    if decision == 'different':
      if candidate_individual_id is None:
        raise InvalidInput('"different" needs the candidate it differs from')
      row.update(candidate_individual_id=candidate_individual_id,
                 previous_individual_id=query['individual_id'])
      return review(cat, _insert(cat, row))
    old = _check_seen(cat, query_annotation_id, replaces)
    if old is not None:   # a changed decision: first take the old one back
      _revert(cat, old, reviewer, None)
    previous = database.annotation(cat, query_annotation_id)['individual_id']
    if decision == 'same':
      if candidate_individual_id is None:
        raise InvalidInput('"same" needs a candidate that belongs to an '
                           'individual')
      candidate_individual_id = identities.live(cat, candidate_individual_id)
      if candidate_individual_id is None:
        raise InvalidInput('that candidate\'s individual was retired')
    elif decision == 'new':
      candidate_individual_id = identities.create_individual(
          cat, new_name, reviewer, notes=notes,
          reason=f'new individual from annotation {query_annotation_id}')
    else:
      candidate_individual_id = None
    row.update(candidate_individual_id=candidate_individual_id,
               supersedes=old['id'] if old else None,
               previous_individual_id=previous)
    review_id = _insert(cat, row)
    if decision in ('same', 'new'):
      identities.assign(cat, query_annotation_id, candidate_individual_id,
                        reviewer, reason=reason, review_id=review_id)
    return review(cat, review_id)


def undo(cat: Catalogue, review_id: int, reviewer: str,
         reason: str = '') -> dict:
  """Supersedes review `review_id` by an `undo` review and restores the
  query's individual from before it. Returns the undo review."""
  reviewer = identities._reviewer(reviewer)   # pylint: disable=protected-access
  with cat.transaction():
    old = review(cat, review_id)
    if old['decision'] == 'undo':
      raise InvalidInput('an undo cannot be undone: decide the photo again')
    later = _superseded_by(cat, review_id)
    if later is not None:
      what = 'undone' if later['decision'] == 'undo' else 'replaced'
      raise AlreadyDecided(f'review {review_id} was already {what} by '
                           f'{later["reviewer"]} at {later["decided_at"]}; '
                           'nothing was changed', later)
    _revert_target(cat, old)
    undo_id = _insert(cat, dict(
        query_annotation_id=old['query_annotation_id'],
        candidate_annotation_id=old['candidate_annotation_id'],
        candidate_individual_id=old['candidate_individual_id'],
        decision='undo', reviewer=reviewer, decided_at=database.clock(),
        supersedes=review_id, reason=reason or '',
        previous_individual_id=database.annotation(
            cat, old['query_annotation_id'])['individual_id']))
    _revert(cat, old, reviewer, undo_id)
    return review(cat, undo_id)


def queue(cat: Catalogue, order: str = 'date', model=None, limit: int = 100,
          offset: int = 0) -> list:
  """Annotations waiting for a decision: no individual and no active
  query-level review. order='date' (oldest photo first, undated last) or
  'confidence' (nearest known individual first, needs `model` and
  search.refresh_nearest; never-searched last)."""
  if order not in ('date', 'confidence'):
    raise InvalidInput(f'queue order {order!r}: date or confidence')
  if order == 'confidence' and not model:
    raise InvalidInput('a queue by confidence needs the model')
  sort = ('p.taken_at IS NULL, p.taken_at, a.id' if order == 'date' else
          'n.distance IS NULL, n.distance, a.id')
  return cat.rows(
      'SELECT a.id AS annotation_id, a.landmarks_source, p.id AS photo_id, '
      'p.original_path, p.content_hash, p.taken_at, p.viewpoint, '
      'n.distance AS nearest_distance, n.individual_id AS nearest_individual_id'
      ' FROM annotations a JOIN photos p ON p.id = a.photo_id '
      'LEFT JOIN nearest n ON n.annotation_id = a.id AND n.model = ? '
      'WHERE a.individual_id IS NULL AND NOT EXISTS (SELECT 1 FROM reviews r '
      f'WHERE r.query_annotation_id = a.id AND {_QUERY_LEVEL} AND {_ACTIVE}) '
      f'ORDER BY {sort} LIMIT ? OFFSET ?', (model, limit, offset))


def history(cat: Catalogue, query_annotation_id=None, limit: int = 1000
            ) -> list:
  """Reviews newest first (of one query, or all), with candidate names."""
  where = 'WHERE r.query_annotation_id = ?' if query_annotation_id else ''
  parameters = (query_annotation_id,) if query_annotation_id else ()
  return cat.rows(
      'SELECT r.*, i.name AS candidate_individual FROM reviews r LEFT JOIN '
      f'individuals i ON i.id = r.candidate_individual_id {where} '
      'ORDER BY r.id DESC LIMIT ?', parameters + (limit,))

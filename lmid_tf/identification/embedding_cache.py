"""Each process's in-memory copy of a model's embeddings, kept current.

Loading 100,000 embeddings from SQLite takes seconds, and every decision
changes what a search sees (an annotation's individual). So a process loads
a model's matrix once, and afterwards reads only the rows that triggers
logged in `search_changes` since its copy, and patches them in: a changed
individual or viewpoint in place, a new or re-computed embedding appended
(its old row marked dead). Views are immutable: a patch makes a new view
that shares the append-only vector buffer, so a search running in another
thread keeps a consistent view. Too many changes, or too many dead rows,
and the matrix is loaded whole again.
"""

import dataclasses
import os
import threading

import numpy as np

PATCH_LIMIT = 20_000   # more logged changes than this: reload whole
_CACHE = {}
_LOCK = threading.Lock()


class _Store:
  """Append-only rows shared by the views of one model."""

  def __init__(self, dim: int, capacity: int):
    self.vectors = np.empty((max(capacity, 1024), dim), np.float32)
    self.norms = np.empty(len(self.vectors), np.float32)
    self.count = 0
    self.approximate = None       # search.ApproximateIndex over the rows
    self.approximate_lock = threading.Lock()

  def append(self, vectors: np.ndarray) -> int:
    """Adds rows; returns the first one's index."""
    need = self.count + len(vectors)
    if need > len(self.vectors):   # views keep the old buffer they point at
      grown = np.empty((2 * need, self.vectors.shape[1]), np.float32)
      grown[:self.count] = self.vectors[:self.count]
      norms = np.empty(len(grown), np.float32)
      norms[:self.count] = self.norms[:self.count]
      self.vectors, self.norms = grown, norms
    first = self.count
    self.vectors[first:need] = vectors
    self.norms[first:need] = np.einsum('ij,ij->i', vectors, vectors)
    self.count = need
    return first


@dataclasses.dataclass(frozen=True)
class View:
  """One model's embeddings at one catalogue version. Rows [count]."""
  version: int
  store: _Store
  matrix: np.ndarray            # [count, D] float32
  norms: np.ndarray             # [count] squared norms
  annotation_ids: np.ndarray    # [count] int64
  individuals: np.ndarray       # [count] int64, -1: no individual
  viewpoints: np.ndarray        # [count] int32 code, 0: unknown
  alive: np.ndarray             # [count] bool, False: replaced or removed
  viewpoint_codes: dict         # viewpoint text -> code
  rows: dict                    # annotation id -> its live row


def _code(codes: dict, viewpoint) -> int:
  return codes.setdefault(viewpoint or '', len(codes))


def _vectors(blobs: list, dim: int) -> np.ndarray:
  return np.frombuffer(b''.join(blobs), '<f4').reshape(len(blobs), dim)


def _full(cat, model: str, version: int) -> View:
  found = cat.execute(
      'SELECT e.annotation_id, e.vector, a.individual_id, p.viewpoint FROM '
      'embeddings e JOIN annotations a ON a.id = e.annotation_id JOIN '
      'photos p ON p.id = a.photo_id WHERE e.model = ? ORDER BY '
      'e.annotation_id', (model,)).fetchall()
  dim = len(found[0][1]) // 4 if found else 0
  store = _Store(dim, 2 * len(found))
  store.append(_vectors([r[1] for r in found], dim))
  codes = {'': 0}
  count = len(found)
  return View(
      version=version, store=store, matrix=store.vectors[:count],
      norms=store.norms[:count],
      annotation_ids=np.array([r[0] for r in found], np.int64),
      individuals=np.array([-1 if r[2] is None else r[2] for r in found],
                           np.int64),
      viewpoints=np.array([_code(codes, r[3]) for r in found], np.int32),
      alive=np.ones(count, bool), viewpoint_codes=codes,
      rows={r[0]: g for g, r in enumerate(found)})


def _patched(cat, model: str, view: View, version: int):
  """The view with the logged changes since it applied, or None when a
  whole reload is the better deal."""
  if version - view.version > PATCH_LIMIT or (
      view.store.count != len(view.annotation_ids)):
    return None
  changed = [r[0] for r in cat.execute(
      'SELECT DISTINCT annotation_id FROM search_changes WHERE id > ?',
      (view.version,))]
  found = {r[0]: r for r in cat.execute(
      'SELECT a.id, e.vector, a.individual_id, p.viewpoint FROM annotations a'
      ' JOIN photos p ON p.id = a.photo_id LEFT JOIN embeddings e ON '
      'e.annotation_id = a.id AND e.model = ? WHERE a.id IN (SELECT '
      'annotation_id FROM search_changes WHERE id > ?)',
      (model, view.version))}
  codes, rows = dict(view.viewpoint_codes), dict(view.rows)
  individuals, viewpoints = view.individuals.copy(), view.viewpoints.copy()
  alive, ids = view.alive.copy(), view.annotation_ids
  appended = []   # (annotation id, vector blob, individual, viewpoint)
  for annotation_id in changed:
    row = found.get(annotation_id)
    old = rows.get(annotation_id)
    if row is None or row[1] is None:          # no embedding of this model
      if old is not None:
        alive[old] = False
        del rows[annotation_id]
      continue
    if old is not None and view.matrix[old].tobytes() == row[1]:
      individuals[old] = -1 if row[2] is None else row[2]
      viewpoints[old] = _code(codes, row[3])
      continue
    if old is not None:
      alive[old] = False
    appended.append(row)
  if appended:
    dim = view.matrix.shape[1] or len(appended[0][1]) // 4
    if len(appended[0][1]) // 4 != dim:
      return None
    first = view.store.append(_vectors([r[1] for r in appended], dim))
    for g, row in enumerate(appended, first):
      rows[row[0]] = g
    ids = np.concatenate([ids, [r[0] for r in appended]])
    individuals = np.concatenate([individuals, [
        -1 if r[2] is None else r[2] for r in appended]])
    viewpoints = np.concatenate([viewpoints, np.array(
        [_code(codes, r[3]) for r in appended], np.int32)])
    alive = np.concatenate([alive, np.ones(len(appended), bool)])
  if (~alive).sum() > max(1000, len(alive) // 4):
    return None
  count = len(ids)
  return View(version=version, store=view.store,
              matrix=view.store.vectors[:count],
              norms=view.store.norms[:count], annotation_ids=ids,
              individuals=individuals, viewpoints=viewpoints, alive=alive,
              viewpoint_codes=codes, rows=rows)


def view(cat, model: str) -> View:
  """The model's embeddings as the catalogue holds them now."""
  key = (os.path.abspath(cat.path), model)
  outer = cat._depth == 0   # pylint: disable=protected-access
  if outer:
    cat.execute('BEGIN')   # one snapshot for the version and the rows
  try:
    version = cat.execute(
        'SELECT coalesce(max(id), 0) FROM search_changes').fetchone()[0]
    with _LOCK:   # one loader at a time; the others then find it done
      cached = _CACHE.get(key)
      if cached is not None and cached.version >= version:
        return cached   # (newer: another connection's later snapshot)
      fresh = _patched(cat, model, cached, version) if cached else None
      fresh = fresh or _full(cat, model, version)
      _CACHE[key] = fresh
      return fresh
  finally:
    if outer:
      cat.execute('COMMIT')

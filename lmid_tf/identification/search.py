"""Finding the catalogued individuals nearest to a query embedding.

Exact search is one matrix product over a model's embeddings (the default).
`ApproximateIndex` wraps a FAISS inverted-file (IVF) or HNSW index for
catalogues where a full product is too slow; `recall_at_k` measures it
against exact search. Candidates are ranked per individual (an individual is
as near as its nearest annotation), optionally only among annotations of the
query's viewpoint (a left flank never matches a right one; annotations of
unknown viewpoint are always compared).

Each process keeps a model's embedding matrix in memory, patched with what
any process changed since (`embedding_cache`).

`approximate=None` (the default of `candidates`) chooses: exact below
APPROXIMATE_FROM embeddings, where one product is a few milliseconds and
recall is 1, the IVF index from there on, where the product alone would
take most of a page's time budget (docs/REVIEW_DESK.md, "Speed").
"""

import numpy as np

from lmid_tf.identification import database
from lmid_tf.identification import embedding_cache
from lmid_tf.identification.database import Catalogue, InvalidInput, NotFound

# At 10^5 the exact product took 88 of a 154 ms match page; IVF with 64
# probes finds 99.5 % of the true 10 nearest there, in a quarter the time.
APPROXIMATE_FROM = 50_000
SEARCH_MODES = {'auto': None, 'exact': False, 'approximate': True}


def squared_norms(matrix: np.ndarray) -> np.ndarray:
  return np.einsum('ij,ij->i', matrix, matrix)


def exact_distances(matrix: np.ndarray, norms: np.ndarray,
                    queries: np.ndarray) -> np.ndarray:
  """Euclidean distances [Q, N] by one product: |x|^2 + |q|^2 - 2 x.q."""
  queries = np.atleast_2d(np.asarray(queries, np.float32))
  squared = norms[None, :] + squared_norms(queries)[:, None] - 2.0 * (
      queries @ matrix.T)
  return np.sqrt(np.maximum(squared, 0.0))


def exact_search(matrix, norms, queries, k: int) -> tuple:
  """(distances [Q, k], indices [Q, k]) of the k nearest rows, nearest
  first."""
  distances = exact_distances(matrix, norms, queries)
  k = min(k, distances.shape[1])
  part = np.argpartition(distances, k - 1, axis=1)[:, :k]
  near = np.take_along_axis(distances, part, axis=1)
  order = np.argsort(near, axis=1, kind='stable')
  return (np.take_along_axis(near, order, axis=1),
          np.take_along_axis(part, order, axis=1))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean share of the true k nearest that were found ([Q, k] indices)."""
  hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
  return float(np.sum(hits) / truth.size)


class ApproximateIndex:
  """A FAISS index over `matrix` rows: 'ivf' (IndexIVFFlat, clustered
  lists, `probes` of them searched) or 'hnsw' (IndexHNSWFlat)."""

  def __init__(self, matrix: np.ndarray, kind: str = 'ivf', lists=None,
               probes: int = 64, neighbours: int = 32, seed: int = 0):
    import faiss   # pylint: disable=import-outside-toplevel
    matrix = np.ascontiguousarray(matrix, np.float32)
    count, dim = matrix.shape
    self.kind = kind
    if kind == 'ivf':
      # ~sqrt(N) lists, each trained on >= 39 points (FAISS's minimum);
      # 10 k-means rounds: the lists need not be perfect, only balanced.
      lists = lists or int(np.clip(np.sqrt(count), 1, max(1, count // 39)))
      quantizer = faiss.IndexFlatL2(dim)
      self.index = faiss.IndexIVFFlat(quantizer, dim, lists)
      self.index.cp.seed = seed
      self.index.cp.niter = 10
      sample = np.random.default_rng(seed).permutation(count)[:64 * lists]
      self.index.train(matrix[np.sort(sample)])
      self.index.add(matrix)
      self.index.nprobe = min(probes, lists)
    elif kind == 'hnsw':
      self.index = faiss.IndexHNSWFlat(dim, neighbours)
      self.index.hnsw.efConstruction = 2 * neighbours
      self.index.add(matrix)
      self.index.hnsw.efSearch = max(probes, 16)
    else:
      raise InvalidInput(f'approximate index {kind!r}: ivf or hnsw')
    self._keep = quantizer if kind == 'ivf' else None   # faiss holds a pointer

  def search(self, queries, k: int) -> tuple:
    """(distances [Q, k], indices [Q, k]); index -1 where fewer exist."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
    squared, indices = self.index.search(queries, k)
    return np.sqrt(np.maximum(squared, 0.0)), indices


def _group(order, distances, table, allowed, top_k: int) -> list:
  """[(individual id, distance, row)] best first, one per individual."""
  best = {}
  for g in order:
    if g < 0 or not allowed[g]:
      continue
    individual = int(table.individuals[g])
    if individual not in best:
      best[individual] = (float(distances[g]), int(g))
      if len(best) == top_k:
        break
  return [(i, d, g) for i, (d, g) in best.items()]


def rank_vector(cat: Catalogue, vector, model: str, top_k: int = 5,
                viewpoint=None, exclude_annotation=None,
                approximate=False) -> list:
  """The top_k individuals nearest to `vector`, best first:
  [{rank, individual_id, individual, annotation_id, photo_id, distance}].
  `approximate`: True, False, or None to choose by the catalogue's size."""
  table = embedding_cache.view(cat, model)
  if not len(table.annotation_ids):
    return []
  if approximate is None:
    approximate = len(table.annotation_ids) >= APPROXIMATE_FROM
  vector = np.asarray(vector, np.float32).reshape(1, -1)
  if vector.shape[1] != table.matrix.shape[1]:
    raise InvalidInput(f'embedding of {vector.shape[1]} values; model '
                       f'{model} has {table.matrix.shape[1]}')
  allowed = (table.individuals >= 0) & table.alive
  if exclude_annotation is not None:
    allowed &= table.annotation_ids != exclude_annotation
  if viewpoint:
    code = table.viewpoint_codes.get(viewpoint, -1)
    allowed &= (table.viewpoints == code) | (table.viewpoints == 0)
  found = []
  if approximate:
    distances, rows = _approximate(table, vector, 64 * top_k)
    by_row = dict(zip(rows.tolist(), distances.tolist()))
    found = _group(rows, by_row, table, allowed, top_k)
  if len(found) < top_k:   # exact, or too few approximate hits survived
    distances = exact_distances(table.matrix, table.norms, vector)[0]
    distances = np.where(allowed, distances, np.inf)
    pool = min(len(distances), 64 * top_k)
    head = np.argpartition(distances, pool - 1)[:pool]
    order = head[np.argsort(distances[head], kind='stable')]
    found = _group(order, distances, table, allowed, top_k)
    if len(found) < top_k and pool < len(distances):
      found = _group(np.argsort(distances, kind='stable'), distances, table,
                     allowed, top_k)
  return _described(cat, table, found)


def _approximate(table, vector, k: int) -> tuple:
  """(distances, rows) from the model's FAISS index, built on first use and
  then grown with the rows appended since (rows of dead or later-added
  annotations are left to the caller's mask)."""
  store = table.store
  with store.approximate_lock:
    if store.approximate is None:
      store.approximate = ApproximateIndex(table.matrix)
    index = store.approximate.index
    if index.ntotal < len(table.matrix):
      index.add(np.ascontiguousarray(table.matrix[index.ntotal:]))
    distances, rows = store.approximate.search(vector, k)
  keep = (rows[0] >= 0) & (rows[0] < len(table.matrix))
  return distances[0][keep], rows[0][keep]


def _described(cat: Catalogue, table, found: list) -> list:
  results = []
  for rank, (individual, distance, g) in enumerate(found, 1):
    annotation_id = int(table.annotation_ids[g])
    row = cat.row('SELECT a.photo_id, i.name FROM annotations a JOIN '
                  'individuals i ON i.id = ? WHERE a.id = ?',
                  (individual, annotation_id))
    results.append({'rank': rank, 'individual_id': individual,
                    'individual': row['name'] if row else None,
                    'annotation_id': annotation_id,
                    'photo_id': row['photo_id'] if row else None,
                    'distance': distance})
  return results


def candidates(cat: Catalogue, query_annotation_id: int, model: str,
               top_k: int = 5, same_viewpoint: bool = True,
               approximate=None) -> list:
  """The top_k individuals for a stored annotation (itself excluded);
  `approximate` as in rank_vector."""
  vector = database.embedding(cat, query_annotation_id, model)
  if vector is None:
    raise NotFound(f'annotation {query_annotation_id} has no embedding of '
                   f'model {model}: embed it first')
  viewpoint = None
  if same_viewpoint:
    viewpoint = database.photo(cat, database.annotation(
        cat, query_annotation_id)['photo_id'])['viewpoint']
  return rank_vector(cat, vector, model, top_k, viewpoint,
                     query_annotation_id, approximate)


def refresh_nearest(cat: Catalogue, model: str, annotation_ids=None,
                    same_viewpoint: bool = True) -> int:
  """Stores each annotation's nearest individual and distance (the review
  queue's "most confident first"); default: every annotation without an
  individual. Returns how many were stored."""
  if annotation_ids is None:
    annotation_ids = [r[0] for r in cat.execute(
        'SELECT a.id FROM annotations a JOIN embeddings e ON e.annotation_id '
        '= a.id AND e.model = ? WHERE a.individual_id IS NULL', (model,))]
  rows = []
  for annotation_id in annotation_ids:
    found = candidates(cat, annotation_id, model, 1, same_viewpoint)
    if found:
      rows.append((annotation_id, model, found[0]['distance'],
                   found[0]['individual_id'], database.clock()))
  with cat.transaction():
    cat.connection.executemany(
        'INSERT OR REPLACE INTO nearest VALUES (?, ?, ?, ?, ?)', rows)
  return len(rows)

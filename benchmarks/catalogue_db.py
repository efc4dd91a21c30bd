r"""How fast the catalogue database adds photos and finds candidates.

  OPENBLAS_NUM_THREADS=1 nice -n 10 python -m benchmarks.catalogue_db \
      --photos=100000 --sizes=10000,100000,1000000 --out=runs/catalogue_db

OPENBLAS_NUM_THREADS=1 as a server would run: one query per core. On a busy
2-core machine OpenBLAS's threads wait for each other and a single query's
product takes several times longer with them.

1. A catalogue of --photos photos (one annotation and one 256-d embedding
   each, 10 photos per individual, left and right flanks) is built through
   the API. Then, one call at a time as the review desk makes them: adding
   one photo (`add_photo`), a whole new photo (photo + annotation +
   embedding, three transactions), the candidates of a query
   (`search.candidates`, same viewpoint, top 5: the match page's server
   time without the embedding and the page rendering), and the reload of
   the embedding matrix after a change.
2. Exact search (one matrix product) against FAISS approximate indexes at
   each of --sizes synthetic embeddings, one query at a time: latency and
   recall@10 against exact search, for several probe counts.

Synthetic embeddings: unit vectors around individual centres (10 photos per
individual) that lie in a 32-dimensional subspace, as learnt embeddings
have a low intrinsic dimension, plus photo noise in all 256 dimensions.
Queries are new photos of catalogued individuals.
"""

import json
import os
import time

from absl import flags
import numpy as np

from benchmarks import machine
from lmid_tf import cli
from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification import reviews
from lmid_tf.identification import search

FLAGS = flags.FLAGS
DIM = 256
PER_INDIVIDUAL = 10


def define_flags():
  flags.DEFINE_integer('photos', 100_000, 'Photos in the database part.')
  flags.DEFINE_list('sizes', ['10000', '100000', '1000000'], 'Embedding '
                    'counts of the exact-versus-approximate part.')
  flags.DEFINE_list('probes', ['8', '16', '32', '64'], 'IVF lists searched.')
  flags.DEFINE_list('kinds', ['ivf', 'hnsw'], 'Approximate indexes to try.')
  flags.DEFINE_integer('hnsw_max', 100_000, 'Largest size to also build an '
                       'HNSW index for (its build is the slowest part).')
  flags.DEFINE_bool('database', True, 'Run the database part.')
  flags.DEFINE_integer('queries', 200, 'Timed calls / recall queries.')
  flags.DEFINE_string('out', 'runs/catalogue_db', 'Folder for the database '
                      'and results.json.')
  flags.DEFINE_integer('seed', 0, 'Random seed.')


def synthetic(count: int, rng: np.random.Generator, centres=None,
              intrinsic: int = 32, noise: float = 0.5) -> tuple:
  """(embeddings [count, DIM] float32 unit rows, individual of each row,
  centres)."""
  if centres is None:
    basis = np.linalg.qr(rng.standard_normal((DIM, intrinsic)))[0].T
    centres = (rng.standard_normal((max(1, count // PER_INDIVIDUAL),
                                    intrinsic)) @ basis).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  who = rng.integers(0, len(centres), count)
  out = np.empty((count, DIM), np.float32)
  for start in range(0, count, 100_000):
    part = who[start:start + 100_000]
    x = centres[part] + noise / np.sqrt(DIM) * rng.standard_normal(
        (len(part), DIM), dtype=np.float32)
    out[start:start + len(part)] = x / np.linalg.norm(x, axis=1,
                                                      keepdims=True)
  return out, who, centres


def _ms(seconds) -> dict:
  seconds = np.asarray(seconds) * 1e3
  return {'p50': float(np.percentile(seconds, 50)),
          'p95': float(np.percentile(seconds, 95)),
          'max': float(seconds.max())}


def _timed(function, count: int) -> dict:
  times = []
  for i in range(count):
    start = time.perf_counter()
    function(i)
    times.append(time.perf_counter() - start)
  return _ms(times)


def build_catalogue(path: str, photos: int, rng) -> tuple:
  for suffix in ('', '-wal', '-shm'):
    if os.path.exists(path + suffix):
      os.remove(path + suffix)
  vectors, who, centres = synthetic(photos, rng)
  cat = database.open(path)
  start = time.perf_counter()
  names = {}
  for begin in range(0, photos, 5000):
    with cat.transaction():
      for i in range(begin, min(begin + 5000, photos)):
        photo_id, _ = database.add_photo(
            cat, f'{i:064x}', f'photos/{i}.jpg', width=640, height=480,
            taken_at=f'2026-{1 + i % 12:02d}-{1 + i % 28:02d}',
            location=f'site {i % 20}', viewpoint=('left', 'right')[i % 2])
        annotation_id = database.add_annotation(cat, photo_id)
        database.set_embedding(cat, annotation_id, 'bench', vectors[i])
        individual = int(who[i])
        if individual not in names:
          names[individual] = identities.create_individual(
              cat, f'ind{individual:06d}', 'bench')
        identities.assign(cat, annotation_id, names[individual], 'bench')
  return cat, time.perf_counter() - start, centres


def database_part(out: str, photos: int, queries: int, rng) -> dict:
  path = os.path.join(out, 'catalogue.sqlite')
  cat, built_s, centres = build_catalogue(path, photos, rng)
  result = {'photos': photos, 'build_s': built_s,
            'file_mb': os.path.getsize(path) / 2**20}
  new_vectors, _, _ = synthetic(queries, rng, centres)
  base = photos + 1   # the annotations whole_photo adds
  result['add_photo'] = _timed(lambda i: database.add_photo(
      cat, f'new{i:061x}', f'new/{i}.jpg', width=640, height=480,
      taken_at='2026-06-01', viewpoint='left'), queries)

  def whole_photo(i):
    photo_id, _ = database.add_photo(cat, f'whole{i:059x}', f'w/{i}.jpg',
                                     width=640, height=480, viewpoint='left')
    annotation_id = database.add_annotation(cat, photo_id)
    database.set_embedding(cat, annotation_id, 'bench', new_vectors[i])
  result['add_photo_annotation_embedding'] = _timed(whole_photo, queries)
  start = time.perf_counter()
  search.candidates(cat, 1, 'bench')
  result['candidates_cold_ms'] = (time.perf_counter() - start) * 1e3
  picks = rng.integers(1, photos, queries)
  result['candidates'] = _timed(lambda i: search.candidates(
      cat, int(picks[i]), 'bench', top_k=5), queries)

  def changed(i):   # another process embedded a photo: the matrix reloads
    database.set_embedding(cat, base + i, 'bench', 0.99 * new_vectors[i])
    search.candidates(cat, int(picks[i]), 'bench', top_k=5)
  result['embed_then_candidates'] = _timed(changed, 20)
  queue = [r['annotation_id'] for r in reviews.queue(cat, limit=queries)]
  result['record_decision'] = _timed(lambda i: reviews.record_decision(
      cat, queue[i], 'new', 'bench', new_name=f'new {i}'), len(queue) // 2)
  rest = queue[len(queue) // 2:]

  def decided(i):   # the next match page after a decision
    reviews.record_decision(cat, rest[i], 'new', 'bench',
                            new_name=f'next {i}')
    search.candidates(cat, int(picks[i]), 'bench', top_k=5)
  result['decide_then_candidates'] = _timed(decided, len(rest))
  cat.close()
  return result


def search_part(size: int, probe_counts: list, kinds: list, hnsw_max: int,
                queries: int, seed: int) -> list:
  rng = np.random.default_rng([seed, size])   # the same data in every run
  matrix, _, centres = synthetic(size, rng)
  asked, _, _ = synthetic(queries, rng, centres)
  norms = search.squared_norms(matrix)
  truth = np.concatenate([search.exact_search(matrix, norms, asked[i:i + 20],
                                              10)[1]
                          for i in range(0, queries, 20)])
  latency_queries = min(queries, 50 if size >= 1_000_000 else queries)
  rows = [dict(size=size, index='exact', setting='', build_s=0.0,
               recall=1.0, **_timed(lambda i: search.exact_search(
                   matrix, norms, asked[i:i + 1], 10), latency_queries))]
  for kind in kinds:
    if kind == 'hnsw' and size > hnsw_max:
      continue
    start = time.perf_counter()
    index = search.ApproximateIndex(matrix, kind, seed=FLAGS.seed)
    built = time.perf_counter() - start
    for probes in probe_counts:
      if kind == 'ivf':
        index.index.nprobe = min(probes, index.index.nlist)
        setting = f'lists={index.index.nlist} probes={index.index.nprobe}'
      else:
        index.index.hnsw.efSearch = 2 * probes
        setting = f'M=32 efSearch={index.index.hnsw.efSearch}'
      _, found = index.search(asked, 10)
      rows.append(dict(size=size, index=kind, setting=setting,
                       build_s=built, recall=search.recall_at_k(found, truth),
                       **_timed(lambda i: index.search(asked[i:i + 1], 10),
                                latency_queries)))
    del index
  return rows


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  rng = np.random.default_rng(FLAGS.seed)
  threads = os.environ.get('OPENBLAS_NUM_THREADS')
  command = ((f'OPENBLAS_NUM_THREADS={threads} ' if threads else '') +
             'nice -n 10 python -m benchmarks.catalogue_db '
             f'--photos={FLAGS.photos} --sizes={",".join(FLAGS.sizes)} '
             f'--probes={",".join(FLAGS.probes)} --kinds={",".join(FLAGS.kinds)}'
             f' --hnsw_max={FLAGS.hnsw_max} --queries={FLAGS.queries}' +
             ('' if FLAGS.database else ' --nodatabase'))
  header = {'command': command, 'date': time.strftime(
      '%Y-%m-%d %H:%M UTC', time.gmtime()), 'machine': machine.describe(),
            'load_average': os.getloadavg()}
  print(f'command: {command}\ndate: {header["date"]}\n{header["machine"]}\n'
        f'load average at start: {header["load_average"]}')
  db = database_part(FLAGS.out, FLAGS.photos, FLAGS.queries, rng) if (
      FLAGS.database) else None
  if db:
    _print_database(db)
  rows = []
  print(f'\n{"embeddings":>10} {"index":6} {"setting":26} {"build s":>8} '
        f'{"p50 ms":>8} {"p95 ms":>8} {"recall@10":>9} {"speed-up":>8}')
  for size in (int(s) for s in FLAGS.sizes):
    part = search_part(size, [int(p) for p in FLAGS.probes], FLAGS.kinds,
                       FLAGS.hnsw_max, FLAGS.queries, FLAGS.seed)
    exact = part[0]['p50']
    for row in part:
      row['speedup'] = exact / row['p50']
      print(f'{row["size"]:10,} {row["index"]:6} {row["setting"]:26} '
            f'{row["build_s"]:8.1f} {row["p50"]:8.2f} {row["p95"]:8.2f} '
            f'{row["recall"]:9.4f} {row["speedup"]:7.1f}x', flush=True)
    rows += part
  with open(os.path.join(FLAGS.out, 'results.json'), 'w') as f:
    json.dump({**header, 'database': db, 'search': rows}, f, indent=1)
  print(f'\nwrote {os.path.join(FLAGS.out, "results.json")}')


def _print_database(db: dict) -> None:
  print(f'\ncatalogue of {db["photos"]:,} photos (built in '
        f'{db["build_s"]:.0f} s, {db["file_mb"]:.0f} MB)')
  print(f'{"one call":44} {"p50 ms":>8} {"p95 ms":>8} {"max ms":>8}')
  for key in ('add_photo', 'add_photo_annotation_embedding', 'candidates',
              'record_decision', 'decide_then_candidates',
              'embed_then_candidates'):
    print(f'{key:44} {db[key]["p50"]:8.1f} {db[key]["p95"]:8.1f} '
          f'{db[key]["max"]:8.1f}')
  print(f'{"candidates, first call (loads the matrix)":44} '
        f'{db["candidates_cold_ms"]:8.1f}', flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'catalogue_db')

r"""How fast the review desk answers: the match page on a 100,000-photo
catalogue, and one uploaded photo embedded with its landmarks predicted.

  OPENBLAS_NUM_THREADS=1 nice -n 10 python -m benchmarks.review_desk \
      --model=runs/demo/export/1 --photos=100000 --out=runs/review_desk

1. Match page: a catalogue of --photos photos with synthetic 256-d
   embeddings (benchmarks.catalogue_db builds it through the database API:
   10 photos per individual, left and right flanks) plus --queries new,
   unidentified photos. Each GET /match/<id> goes through Flask's test
   client: the database reads, the candidates (same viewpoint, top 5; for
   each --searches mode: the desk's default `auto`, which is approximate
   from search.APPROXIMATE_FROM embeddings on, and `exact`), the verdict and
   the rendered page; the query's
   embedding is already stored (the page's time excludes embedding, which
   part 2 times). Warm: the embedding matrix is cached (no decision since
   the last page). After a decision: every page follows a recorded
   decision, which changes what the search sees, so the matrix is reloaded.
2. One uploaded photo with the demo's export (--model): the images_only
   signature predicts its landmarks and embeds it in one call (the desk's
   import path), on a demo photo (64 px) and on a 1600 x 1200 JPEG of it;
   and the whole import of one photo into the 100,000-photo catalogue
   (checks, content-hash store, photo + annotation rows, predict + embed).
"""

import io
import os
import time
import types

from absl import flags
import cv2
import numpy as np

from benchmarks import catalogue_db
from benchmarks import machine
from lmid_tf import cli
from lmid_tf.identification import database
from lmid_tf.identification import reviews
from review import context
from review import desk
from review import embedder as embedder_lib
from review import import_jobs

FLAGS = flags.FLAGS
MODEL = 'bench'   # catalogue_db's model name for its synthetic embeddings


def define_flags():
  flags.DEFINE_string('model', 'runs/demo/export/1', 'The demo\'s export.')
  flags.DEFINE_string('photo', '', 'A photo to upload; default: the first '
                      'query photo of the demo next to --model.')
  flags.DEFINE_integer('photos', 100_000, 'Catalogued photos.')
  flags.DEFINE_integer('queries', 100, 'Match pages timed (each kind).')
  flags.DEFINE_integer('uploads', 50, 'Uploads timed (each kind).')
  flags.DEFINE_string('out', 'runs/review_desk', 'Folder for the catalogue.')
  flags.DEFINE_list('parts', ['match', 'upload'], 'What to time.')
  flags.DEFINE_list('searches', ['auto', 'exact'], 'The desk\'s --search '
                    'modes the match page is timed with.')
  flags.DEFINE_bool('reuse', False, 'Time the catalogue an earlier run built '
                    'in --out instead of building it again.')


def _stats(seconds) -> str:
  ms = np.asarray(seconds) * 1e3
  return (f'{np.percentile(ms, 50):7.1f} {np.percentile(ms, 95):7.1f} '
          f'{ms.max():7.1f}')


def _timed(function, count: int) -> list:
  times = []
  for i in range(count):
    start = time.perf_counter()
    function(i)
    times.append(time.perf_counter() - start)
  return times


class _SyntheticModel:
  """Stands for the export on the synthetic catalogue: its embeddings are
  already stored, so the match page never calls it."""
  fingerprint = MODEL
  landmark_names = ()
  preprocess = types.SimpleNamespace(num_landmarks=0)


def _add_queries(cat, count: int, centres, rng) -> list:
  vectors, _, _ = catalogue_db.synthetic(count, rng, centres)
  added = []
  with cat.transaction():
    for i in range(count):
      photo_id, _ = database.add_photo(
          cat, f'q{i:063x}', f'new/{i}.jpg', width=640, height=480,
          taken_at='2026-12-01', viewpoint=('left', 'right')[i % 2])
      annotation_id = database.add_annotation(cat, photo_id)
      database.set_embedding(cat, annotation_id, MODEL, vectors[i])
      added.append(annotation_id)
  return added


def _match_pages(path: str, queries: list, search: str) -> tuple:
  app = desk.create_app(desk.DeskConfig(catalogue=path, model='synthetic',
                                        search=search),
                        _SyntheticModel(), backfill=False)
  client = app.test_client()
  with client.session_transaction() as session:
    session['reviewer'] = 'bench'
  for annotation_id in queries[:3]:   # first load of the matrix, templates
    assert client.get(f'/match/{annotation_id}').status_code == 200
  warm = _timed(lambda i: client.get(f'/match/{queries[i]}'), len(queries))
  cat = database.open(path)
  after = []
  for i, annotation_id in enumerate(queries):
    decided = reviews.record_decision(cat, annotation_id, 'cannot_tell',
                                      'bench')
    start = time.perf_counter()
    assert client.get(f'/match/{queries[(i + 1) % len(queries)]}'
                      ).status_code == 200
    after.append(time.perf_counter() - start)
    reviews.undo(cat, decided['id'], 'bench')
  cat.close()
  return warm, after


def _demo_photo(model: str) -> bytes:
  if FLAGS.photo:
    with open(FLAGS.photo, 'rb') as f:
      return f.read()
  folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
      model))), 'data', 'images', 'query')
  with open(os.path.join(folder, sorted(os.listdir(folder))[0]), 'rb') as f:
    return f.read()


def _uploads(path: str, model: str) -> dict:
  embedder = embedder_lib.Embedder(model)
  small = _demo_photo(model)
  image = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
  large = cv2.imencode('.jpg', cv2.resize(image, (1600, 1200)), [
      cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
  for data in (small, large):
    embedder.predict(data)   # the signature's first call traces it
  results = {
      'predict + embed, demo photo': _timed(
          lambda i: embedder.predict(small), FLAGS.uploads),
      'predict + embed, 1600 x 1200 JPEG': _timed(
          lambda i: embedder.predict(large), FLAGS.uploads)}
  the_desk = context.Desk(desk.DeskConfig(catalogue=path, model=model),
                       embedder)
  cat = database.open(path)
  rng = np.random.default_rng(1)

  def upload(i):
    noisy = np.clip(image.astype(np.int16) + rng.integers(
        -3, 4, image.shape), 0, 255).astype(np.uint8)   # a new photo each time
    data = cv2.imencode('.png', noisy)[1].tobytes()
    import_jobs.import_photo(cat, the_desk, f'upload{i}.png', data, None,
                             'bench')
  upload(-1)
  results[f'whole import of one photo ({FLAGS.photos:,} photos)'] = _timed(
      upload, FLAGS.uploads)
  cat.close()
  return results


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, 'desk.sqlite')
  rng = np.random.default_rng(0)
  started = time.time()
  if FLAGS.reuse and os.path.exists(path):
    with database.open(path) as cat:
      queries = [r[0] for r in cat.execute(
          'SELECT id FROM annotations WHERE id > ? ORDER BY id LIMIT ?',
          (FLAGS.photos, FLAGS.queries))]
  else:
    cat, _, centres = catalogue_db.build_catalogue(path, FLAGS.photos, rng)
    queries = _add_queries(cat, FLAGS.queries, centres, rng)
    cat.close()
    print(f'review_desk: built {FLAGS.photos} photos in '
          f'{time.time() - started:.0f} s', flush=True)
  rows = []
  for search in FLAGS.searches if 'match' in FLAGS.parts else ():
    warm, after = _match_pages(path, queries, search)
    rows += [(f'match page, {FLAGS.photos:,} photos, warm, {search}', warm),
             (f'match page, {FLAGS.photos:,} photos, after a decision, '
              f'{search}', after)]
  if 'upload' in FLAGS.parts:
    rows += list(_uploads(path, FLAGS.model).items())
  out = io.StringIO()
  out.write('| what (ms) | p50 | p95 | max |\n| --- | ---: | ---: | ---: |\n')
  for name, times in rows:
    p50, p95, worst = _stats(times).split()
    out.write(f'| {name} | {p50} | {p95} | {worst} |\n')
  print(out.getvalue())
  machine.print_footer(
      'OPENBLAS_NUM_THREADS=1 nice -n 10 python -m '
      f'benchmarks.review_desk --model={FLAGS.model} --photos={FLAGS.photos}'
      f' --queries={FLAGS.queries} --uploads={FLAGS.uploads}'
      f' --parts={",".join(FLAGS.parts)}'
      f' --searches={",".join(FLAGS.searches)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'review_desk')

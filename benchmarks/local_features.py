r"""The no-learning floor: RootSIFT keypoints ranked by HotSpotter's LNBNN.

  python -m benchmarks.local_features --data=data/nyala/tfrecords
  python -m benchmarks.local_features --data=data/nyala/tfrecords \
      --model=runs/nyala/nyala_6ep/export --rerank_top=20

The same protocol as the deep models: each record of the query split is
ranked against the gallery split (lmid_tf.evaluation.metrics), within its
viewpoint (`within`: a left flank against left flanks only) and across
viewpoints (`across`). Photos are decoded in grey, scaled to at most
--max_side pixels on their longest side, and described by at most
--max_keypoints SIFT keypoints (OpenCV), each made RootSIFT (Arandjelovic &
Zisserman 2012: L1-normalised, then the square root, so that Euclidean
distance compares them as the Hellinger kernel does).

LNBNN (local naive Bayes nearest neighbour; Crall et al. 2013, HotSpotter):
every query descriptor looks up its k + 1 nearest neighbours among all the
gallery descriptors pooled (OpenCV's FLANN, randomised kd-trees). The
(k + 1)-th is the background: each of the first k that is the nearest of
its individual votes d_(k+1) - d_i for its photo, so an individual gets at
most one vote per query descriptor, and a descriptor that is as close to
everything (sky, grass) votes almost nothing. A photo's score is its votes'
sum; the ranking is by score, highest first.

With --model (a SavedModel export or a .keras embedding model), the deep
model's ranking is evaluated too, then its top --rerank_top gallery photos
of every query are re-ordered by their LNBNN scores (the rest keep the deep
order): the local features re-rank a deep shortlist, as wildlife-tools'
WildFusion does (it calibrates and adds the scores; here the shortlist is
simply sorted by LNBNN).

Prints one row per ranking (top-1, top-5, mAP, mINP, and wall and CPU
seconds: its own
matching plus the shared feature extraction for the LNBNN rows; the
deep model's embedding and ranking for its rows, and those plus the LNBNN
row's for a re-ranked row), the command, and the machine; each row's
metrics go to --out/<row>.json.
"""

import os
import sys
import time

from absl import app
from absl import flags
import cv2
import numpy as np

from benchmarks import machine
from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf.data import records
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import retrieval


def rootsift(gray: np.ndarray, max_keypoints: int = 0) -> np.ndarray:
  """[H, W] uint8 image -> [N, 128] float32 RootSIFT descriptors (N may be
  0). max_keypoints: keep the strongest this many (0: all)."""
  keypoints, descriptors = cv2.SIFT_create(
      nfeatures=max_keypoints).detectAndCompute(gray, None)
  if descriptors is None:
    return np.zeros([0, 128], np.float32)
  # SIFT keeps ties at the cut, so it may return a few more.
  strongest = np.argsort([-p.response for p in keypoints], kind='stable')
  descriptors = descriptors[strongest[:max_keypoints or None]].astype(
      np.float32)
  descriptors /= np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7)
  return np.sqrt(descriptors)


def photo_descriptors(encoded: bytes, max_side: int,
                      max_keypoints: int) -> np.ndarray:
  """An encoded photo -> its RootSIFT descriptors, at most max_side pixels
  on its longest side (a larger photo is scaled down first)."""
  gray = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_GRAYSCALE)
  if gray is None:
    raise ValueError('a record\'s image does not decode')
  scale = max_side / max(gray.shape)
  if scale < 1:
    gray = cv2.resize(gray, (round(gray.shape[1] * scale),
                             round(gray.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)
  return rootsift(gray, max_keypoints)


def lnbnn_votes(distances: np.ndarray, photos: np.ndarray,
                individuals: np.ndarray, num_photos: int) -> np.ndarray:
  """LNBNN's votes, summed per gallery photo.

  Args:
    distances: [M, k + 1] Euclidean distances of M query descriptors to
      their k + 1 nearest gallery descriptors, ascending.
    photos: [M, k + 1] int, the gallery photo each neighbour belongs to.
    individuals: [num_photos] int, each gallery photo's individual.
  Returns:
    [num_photos] float64: for each photo, the sum over query descriptors of
    d_(k+1) - d_i, for its neighbours i <= k that are the nearest of their
    individual among that descriptor's k (one vote per individual).
  """
  distances = np.asarray(distances, np.float64)
  photos = np.asarray(photos)
  scores = np.zeros(num_photos)
  if not len(distances):
    return scores
  k = distances.shape[1] - 1
  owners = np.asarray(individuals)[photos[:, :k]]
  first = np.ones(owners.shape, bool)
  for i in range(1, k):
    first[:, i] = (owners[:, :i] != owners[:, i:i + 1]).all(axis=1)
  votes = (distances[:, k:] - distances[:, :k]) * first
  np.add.at(scores, photos[:, :k], votes)
  return scores


def lnbnn_scores(query: list, gallery: list, individuals: np.ndarray,
                 allowed: np.ndarray, k: int = 5, checks: int = 64,
                 seed: int = 0) -> np.ndarray:
  """[Q, G] LNBNN scores of every query photo against the gallery photos.

  Args:
    query, gallery: lists of [N_i, 128] float32 descriptors, one per photo.
    individuals: [G] int, each gallery photo's individual.
    allowed: [Q, G] bool: which gallery photos a query is ranked against
      (its viewpoint); a query's descriptors are looked up among the pooled
      descriptors of its allowed photos only.
  Returns:
    [Q, G] float64; -inf where not allowed.
  """
  owner = np.concatenate([np.full(len(d), g) for g, d in enumerate(gallery)]
                         ).astype(np.int64)
  pooled = np.concatenate(gallery).astype(np.float32)
  scores = np.full(allowed.shape, -np.inf)
  # Queries allowed the same gallery photos share one index.
  groups = {}
  for q, row in enumerate(allowed):
    groups.setdefault(row.tobytes(), []).append(q)
  for queries in groups.values():
    photos_allowed = allowed[queries[0]]
    keep = photos_allowed[owner]
    data, data_owner = pooled[keep], owner[keep]
    scores[queries] = np.where(photos_allowed, 0.0, -np.inf)
    if len(data) <= k:
      continue
    cv2.setRNGSeed(seed)      # the kd-trees' random splits
    index = cv2.flann_Index(data, {'algorithm': 1, 'trees': 4})
    for q in queries:
      if not len(query[q]):
        continue
      neighbours, squared = index.knnSearch(
          np.ascontiguousarray(query[q], np.float32), k + 1,
          params={'checks': checks})
      found = (neighbours >= 0).all(axis=1)   # FLANN pads with -1
      scores[q] += lnbnn_votes(np.sqrt(np.maximum(squared[found], 0)),
                               data_owner[neighbours[found]], individuals,
                               len(gallery))
  return scores


def rerank_top(distances: np.ndarray, scores: np.ndarray,
               top: int) -> np.ndarray:
  """[Q, G] distances whose order is the deep ranking with each query's
  first `top` gallery photos re-ordered by `scores` (highest first; ties
  keep the deep order). Returned values are ranks (0, 1, ...), inf where
  `distances` is inf."""
  reranked = np.full(distances.shape, np.inf)
  for q, row in enumerate(distances):
    order = np.argsort(row, kind='stable')
    order = order[np.isfinite(row[order])]
    head = order[:top]
    head = head[np.argsort(-scores[q, head], kind='stable')]
    order = np.concatenate([head, order[top:]])
    reranked[q, order] = np.arange(len(order))
  return reranked


def read_split(data_dir: str, split: str) -> dict:
  """{'encoded' [N] bytes, 'labels' [N], 'paths', 'viewpoints'} in the
  split's record order (the order lmid_tf's evaluation embeds it in)."""
  parsed = records.parse_split(data_dir, split)
  return {'encoded': parsed['encoded'], 'labels': parsed['label'],
          'paths': parsed['path'], 'viewpoints': parsed['viewpoint']}


def same_viewpoint(query_viewpoints, gallery_viewpoints) -> np.ndarray:
  """[Q, G] bool, as metrics.restrict_to_viewpoint ranks (b'' matches
  every viewpoint)."""
  return np.isfinite(metrics_lib.restrict_to_viewpoint(
      np.zeros([len(query_viewpoints), len(gallery_viewpoints)]),
      query_viewpoints, gallery_viewpoints))


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('data', None, 'Dataset folder from data_tools.convert '
                      '(its gallery and query splits).')
  flags.DEFINE_list('modes', ['within', 'across'], 'within: rank each query '
                    'against its viewpoint only; across: against all.')
  flags.DEFINE_integer('max_side', 512, 'Longest side photos are scaled '
                       'down to before SIFT.')
  flags.DEFINE_integer('max_keypoints', 500, 'Strongest SIFT keypoints kept '
                       'per photo (0: all).')
  flags.DEFINE_integer('k', 5, 'LNBNN: neighbours that vote (the k+1-th is '
                       'the background).')
  flags.DEFINE_integer('checks', 64, 'FLANN leaves checked per lookup.')
  flags.DEFINE_string('model', '', 'Optional deep model (SavedModel export '
                      'or .keras) whose top --rerank_top are re-ranked.')
  flags.DEFINE_integer('rerank_top', 20, 'Deep shortlist re-ranked by LNBNN.')
  flags.DEFINE_integer('batch_size', 64, 'Deep model evaluation batch size.')
  flags.DEFINE_string('out', '', 'Folder for <row>.json; default: '
                      'local_features/ beside --data.')


def _clock() -> np.ndarray:
  """[wall, CPU] seconds; CPU (all threads) says what the work cost when
  other jobs share or pause the cores, which wall time cannot."""
  return np.array([time.perf_counter(), time.process_time()])


def _row(name: str, distances, query, gallery, seconds, out: str):
  m = metrics_lib.summary(distances, query['labels'], gallery['labels'])
  m['seconds'], m['cpu_seconds'] = (float(t) for t in seconds)
  artifacts.write_json(os.path.join(out, name + '.json'), m)
  print(f'{name:24} {100 * m["top1"]:7.2f}% {100 * m["top5"]:7.2f}% '
        f'{100 * m["mAP"]:7.2f}% {100 * m["mINP"]:7.2f}% '
        f'{seconds[0]:8.1f} {seconds[1]:8.1f}', flush=True)


def main(argv):
  del argv
  if not FLAGS.data:
    raise app.UsageError('--data is required')
  if not set(FLAGS.modes) <= {'within', 'across'} or not FLAGS.modes:
    raise app.UsageError('--modes: within and/or across')
  print('command: python -m benchmarks.local_features ' + ' '.join(
      sys.argv[1:]))
  print(machine.describe())
  out = FLAGS.out or os.path.join(
      os.path.dirname(os.path.abspath(FLAGS.data.rstrip('/'))),
      'local_features')
  os.makedirs(out, exist_ok=True)
  gallery = read_split(FLAGS.data, 'gallery')
  query = read_split(FLAGS.data, 'query')
  start = _clock()
  features = {split: [photo_descriptors(e, FLAGS.max_side,
                                        FLAGS.max_keypoints)
                      for e in side['encoded']]
              for split, side in (('gallery', gallery), ('query', query))}
  extraction = _clock() - start
  count = sum(len(d) for side in features.values() for d in side)
  print(f'features: {len(gallery["labels"])} gallery + '
        f'{len(query["labels"])} query photos, {count} RootSIFT descriptors, '
        f'{extraction[0]:.1f} s ({extraction[1]:.1f} s CPU)')
  print(f'{"row":24} {"top-1":>8} {"top-5":>8} {"mAP":>8} {"mINP":>8} '
        f'{"wall s":>8} {"CPU s":>8}')
  everything = np.ones([len(query['labels']), len(gallery['labels'])], bool)
  scores, lnbnn_seconds = {}, {}
  for mode in FLAGS.modes:
    allowed = (same_viewpoint(query['viewpoints'], gallery['viewpoints'])
               if mode == 'within' else everything)
    start = _clock()
    scores[mode] = lnbnn_scores(features['query'], features['gallery'],
                                gallery['labels'], allowed, FLAGS.k,
                                FLAGS.checks)
    lnbnn_seconds[mode] = extraction + _clock() - start
    _row(f'lnbnn_{mode}', -scores[mode], query, gallery, lnbnn_seconds[mode],
         out)
  if not FLAGS.model:
    return
  start = _clock()
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  deep = retrieval.evaluate(embed_fn, FLAGS.data, pre,
                            batch_size=FLAGS.batch_size)
  for ours, theirs in ((gallery, deep.gallery), (query, deep.query)):
    if not np.array_equal(ours['paths'], theirs['paths']):
      raise ValueError('the deep evaluation\'s record order differs')
  seconds = _clock() - start
  for mode in FLAGS.modes:
    distances = deep.distances
    if mode == 'within':
      distances = metrics_lib.restrict_to_viewpoint(
          distances, query['viewpoints'], gallery['viewpoints'])
    _row(f'deep_{mode}', distances, query, gallery, seconds, out)
    _row(f'deep_{mode}_rerank{FLAGS.rerank_top}',
         rerank_top(distances, scores[mode], FLAGS.rerank_top), query,
         gallery, seconds + lnbnn_seconds[mode], out)

if __name__ == '__main__':
  define_flags()
  cli.run(main, 'local_features')

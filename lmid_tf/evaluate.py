r"""Retrieval evaluation: rank the gallery for every query; CMC and mAP.

  python -m lmid_tf.evaluate --model=runs/demo/embedding_model.keras \
      --data=data/synthetic/tfrecords --out=runs/demo/eval

`--model` is a `.keras` embedding model written by lmid_tf.train (its
`preprocess.json` beside it) or a SavedModel from serving.export (a version
folder, or the export base, whose newest version is used). Writes
results.json, cmc.png and ranked.png (each query beside its top 5, green
frame = same identity, red = different).
"""

import dataclasses
import os

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf.modeling import landmark_model
from lmid_tf.data import overlay
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess
from lmid_tf.evaluation import reranking


@dataclasses.dataclass
class Evaluation:
  """metrics: {'top1', 'top5', 'top10', 'mAP', 'queries', 'gallery', 'cmc'};
  gallery, query: embed_split's arrays; distances: [Q, G]."""
  metrics: dict
  gallery: dict
  query: dict
  distances: np.ndarray


def mirrored_inputs(batch: dict, pre: preprocess.PreprocessConfig,
                    flip_pairs) -> dict:
  """Model inputs of the horizontally mirrored images of an eval batch.

  Mirroring swaps left and right, so each declared (left, right) landmark
  pair swaps channels; without that the heatmaps would lie.
  """
  images = batch['raw_image'][:, :, ::-1]
  landmarks = tf.stack([1.0 - batch['landmarks'][..., 0],
                        batch['landmarks'][..., 1]], axis=-1)
  order = list(range(landmarks.shape[1]))
  for left, right in flip_pairs:
    order[left], order[right] = right, left
  visible = tf.gather(batch['visible'], order, axis=1)
  landmarks = tf.gather(landmarks, order, axis=1) * visible[..., None]
  return preprocess.model_inputs(images, landmarks, visible, pre)


def predicted_landmarks(batch: dict, predictor) -> tuple:
  """(landmarks [B, K, 2], visible [B, K]) that a predictor ((model,
  PreprocessConfig), landmark_model.load) finds in an eval batch."""
  net, predictor_pre = predictor
  side = predictor_pre.image_size
  images = tf.image.resize(batch['raw_image'], [side, side], antialias=True)
  return landmark_model.found_landmarks(landmark_model.predict_images(
      net, images, predictor_pre.channels))


def embed_split(embed_fn, dataset: tf.data.Dataset,
                pre: preprocess.PreprocessConfig = None,
                flip_pairs=None, predictor=None) -> dict:
  """Runs `embed_fn` over an eval dataset.

  With `flip_pairs` (a list of (left, right) landmark indices, possibly
  empty for landmark-free models), each embedding is the normalised sum of
  the image's and its mirror image's (test-time flipping). With a
  `predictor`, predicted landmarks replace the annotated ones (and are what
  'landmarks' / 'visible' return).

  Returns numpy arrays: embeddings [N, D], labels [N], names [N], paths
  [N] and viewpoints [N] (bytes), images
  [N, S, S, C] uint8, landmarks [N, K, 2], visible [N, K].
  """
  parts = {k: [] for k in ('embeddings', 'labels', 'names', 'paths',
                           'viewpoints', 'images', 'landmarks', 'visible')}
  for batch in dataset:
    if predictor is not None:
      batch = dict(batch)
      batch['landmarks'], batch['visible'] = predicted_landmarks(batch,
                                                                 predictor)
      batch.update(preprocess.model_inputs(batch['raw_image'],
                                           batch['landmarks'],
                                           batch['visible'], pre))
    inputs = {k: batch[k] for k in ('image', 'heatmaps') if k in batch}
    embeddings = np.asarray(embed_fn(inputs))
    if flip_pairs is not None:
      embeddings = embeddings + np.asarray(embed_fn(
          mirrored_inputs(batch, pre, flip_pairs)))
      embeddings /= np.maximum(
          np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    parts['embeddings'].append(embeddings)
    parts['labels'].append(batch['label'].numpy())
    parts['names'].append(batch['name'].numpy())
    parts['paths'].append(batch['path'].numpy())
    parts['viewpoints'].append(batch['viewpoint'].numpy())
    parts['images'].append(
        np.round(batch['raw_image'].numpy() * 255).astype(np.uint8))
    parts['landmarks'].append(batch['landmarks'].numpy())
    parts['visible'].append(batch['visible'].numpy())
  return {k: np.concatenate(v) for k, v in parts.items()}


def distance_matrix(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
  """[Q, D], [G, D] -> [Q, G] Euclidean distances."""
  # In float64: the expansion below cancels large norms, and in float32 that
  # cancellation errs by ~1e-4 on near-duplicate pairs (a 4 % error at 0.002).
  query, gallery = query.astype(np.float64), gallery.astype(np.float64)
  d2 = (np.sum(query ** 2, 1)[:, None] + np.sum(gallery ** 2, 1)[None, :]
        - 2 * query @ gallery.T)
  return np.sqrt(np.maximum(d2, 0))


def _ranked_matches(distances, query_labels, gallery_labels) -> np.ndarray:
  """[Q, G] bool: is the r-th nearest gallery image of query q its identity.
  A gallery image at infinite distance is out of that query's ranking
  (restrict_to_viewpoint), so it is never a match."""
  order = np.argsort(distances, axis=1, kind='stable')
  return ((gallery_labels[order] == query_labels[:, None])
          & np.isfinite(np.take_along_axis(distances, order, axis=1)))


def restrict_to_viewpoint(distances, query_viewpoints,
                          gallery_viewpoints) -> np.ndarray:
  """[Q, G] distances with every pair of different viewpoints set to
  infinity, i.e. each query ranked only against its own viewpoint (a
  nyala's left flank against left flanks). A photo whose viewpoint is
  unknown (b'') is compared with every viewpoint."""
  query_viewpoints = np.asarray(query_viewpoints)[:, None]
  gallery_viewpoints = np.asarray(gallery_viewpoints)[None, :]
  same = ((query_viewpoints == gallery_viewpoints)
          | (query_viewpoints == b'') | (gallery_viewpoints == b''))
  return np.where(same, distances, np.inf)


def cmc_and_map(distances, query_labels, gallery_labels, max_rank: int = 10):
  """CMC curve and mean average precision.

  Queries with no gallery image of their identity are left out (they cannot
  be matched), as in the standard re-identification protocol; so are
  gallery images at infinite distance (restrict_to_viewpoint).

  Returns:
    (cmc [max_rank] with cmc[r-1] = top-r accuracy, mAP, number of queries
    evaluated).
  """
  matches = _ranked_matches(distances, query_labels, gallery_labels)
  valid = matches.any(axis=1)
  matches = matches[valid]
  if not len(matches):
    return np.zeros(max_rank), 0.0, 0
  first_hit = matches.argmax(axis=1)
  cmc = np.array([(first_hit < r).mean() for r in range(1, max_rank + 1)])
  hits = np.cumsum(matches, axis=1)
  precision = hits / np.arange(1, matches.shape[1] + 1)
  average_precision = (precision * matches).sum(1) / matches.sum(1)
  return cmc, float(average_precision.mean()), int(valid.sum())


def mean_inverse_negative_penalty(distances, query_labels,
                                  gallery_labels) -> float:
  """mINP (Ye et al., 2021): per query, the share of the gallery ranked up to
  its hardest (last) true match that are true matches, |positives| / rank of
  the last positive; averaged over queries that have a match.

  It says how much of the ranking a person must check to find *every* image
  of the individual, which top-1 and mAP hide.
  """
  matches = _ranked_matches(distances, query_labels, gallery_labels)
  valid = matches.any(axis=1)
  matches = matches[valid]
  if not len(matches):
    return 0.0
  last = matches.shape[1] - np.argmax(matches[:, ::-1], axis=1)
  return float(np.mean(matches.sum(axis=1) / last))


def plot_cmc(cmc: np.ndarray, path: str, title: str = '') -> None:
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  figure, axes = plt.subplots(figsize=(5, 3.5), dpi=100)
  ranks = np.arange(1, len(cmc) + 1)
  axes.plot(ranks, 100 * cmc, marker='o')
  for r in (1, 5, 10):
    if r <= len(cmc):
      axes.annotate(f'{100 * cmc[r - 1]:.1f}%', (r, 100 * cmc[r - 1]),
                    textcoords='offset points', xytext=(0, 6), ha='center')
  axes.set(xlabel='rank', ylabel='identification rate (%)', ylim=(0, 105),
           xticks=ranks, title=title or 'CMC')
  axes.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path + '.tmp.png')
  plt.close(figure)
  os.replace(path + '.tmp.png', path)


def _tile(image, landmarks, visible, colour=None, scale=2):
  tile = overlay.colourise(image.astype(np.float32) / 255.0)
  tile = cv2.resize(tile, None, fx=scale, fy=scale,
                    interpolation=cv2.INTER_NEAREST)
  tile = overlay.draw_landmarks(tile, landmarks, visible, radius=2 * scale)
  if colour is not None:
    cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1),
                  colour, 3)
  return tile


def ranked_sheet(query: dict, gallery: dict, distances, num_queries: int = 8,
                 top: int = 5, seed: int = 0) -> np.ndarray:
  """Rows: a query, then its `top` nearest gallery images framed green (same
  identity) or red (different)."""
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(distances), size=min(num_queries, len(distances)),
                     replace=False)
  tiles = []
  for q in sorted(picks):
    tiles.append(_tile(query['images'][q], query['landmarks'][q],
                       query['visible'][q], colour=(128, 128, 128)))
    for g in np.argsort(distances[q], kind='stable')[:top]:
      same = gallery['labels'][g] == query['labels'][q]
      tiles.append(_tile(gallery['images'][g], gallery['landmarks'][g],
                         gallery['visible'][g],
                         colour=(0, 180, 0) if same else (0, 0, 230)))
  return overlay.grid(tiles, top + 1)


def evaluate(embed_fn, data_dir: str, pre: preprocess.PreprocessConfig,
             out_dir: str = '', batch_size: int = 64, title: str = '',
             splits=('gallery', 'query'),
             perturbation: pipeline.Perturbation = None,
             rerank: bool = False, flip_pairs=None,
             predictor=None, match_viewpoint: bool = False) -> Evaluation:
  """Embeds gallery and query, scores them, writes the outputs to out_dir
  (results.json, cmc.png, ranked.png) when it is given.

  `perturbation` applies the paper's noisy / missing landmark protocol to
  both sides; `rerank` ranks by k-reciprocal re-ranked distances;
  `flip_pairs` ([(left, right)] landmark indices) adds test-time flipping;
  `predictor` (landmark_model.load) replaces annotated landmarks with
  predicted ones on both sides; `match_viewpoint` ranks each query only
  against gallery photos of its viewpoint."""
  gallery_split, query_split = splits
  gallery = embed_split(embed_fn, pipeline.eval_dataset(
      data_dir, gallery_split, pre, batch_size, perturbation), pre,
      flip_pairs, predictor)
  query = embed_split(embed_fn, pipeline.eval_dataset(
      data_dir, query_split, pre, batch_size, perturbation), pre, flip_pairs,
      predictor)
  distances = distance_matrix(query['embeddings'], gallery['embeddings'])
  if rerank:
    distances = reranking.k_reciprocal(
        distances,
        distance_matrix(query['embeddings'], query['embeddings']),
        distance_matrix(gallery['embeddings'], gallery['embeddings']))
  if match_viewpoint:
    distances = restrict_to_viewpoint(distances, query['viewpoints'],
                                      gallery['viewpoints'])
  cmc, mean_ap, evaluated = cmc_and_map(distances, query['labels'],
                                        gallery['labels'])
  metrics = {'top1': float(cmc[0]), 'top5': float(cmc[4]),
             'top10': float(cmc[9]), 'mAP': mean_ap,
             'mINP': mean_inverse_negative_penalty(
                 distances, query['labels'], gallery['labels']),
             'queries': evaluated, 'gallery': int(len(gallery['labels'])),
             'cmc': [float(c) for c in cmc]}
  if perturbation:
    metrics['perturbation'] = dataclasses.asdict(perturbation)
  if rerank:
    metrics['reranked'] = True
  if flip_pairs is not None:
    metrics['flip_pairs'] = [list(p) for p in flip_pairs]
  if predictor is not None:
    metrics['landmarks'] = 'predicted'
  if match_viewpoint:
    metrics['match_viewpoint'] = True
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    artifacts.write_json(os.path.join(out_dir, 'results.json'), metrics)
    plot_cmc(cmc, os.path.join(out_dir, 'cmc.png'), title)
    overlay.write_png(os.path.join(out_dir, 'ranked.png'),
                      ranked_sheet(query, gallery, distances))
  return Evaluation(metrics, gallery, query, distances)


def format_results(metrics: dict) -> str:
  return (f'top-1 {100 * metrics["top1"]:.2f}%  top-5 '
          f'{100 * metrics["top5"]:.2f}%  top-10 {100 * metrics["top10"]:.2f}%'
          f'  mAP {100 * metrics["mAP"]:.2f}%  mINP {100 * metrics["mINP"]:.2f}%'
          f'  ({metrics["queries"]} queries, '
          f'{metrics["gallery"]} gallery images)')


def parse_flip_pairs(spec: list, data_dir: str,
                     pre: preprocess.PreprocessConfig):
  """['a:b', ...] of landmark names -> [(index_a, index_b)]; None when not
  flipping. Names are checked against the dataset's landmarks."""
  if not spec:
    return None
  if spec == ['none']:
    if pre.num_landmarks:
      raise ValueError('--flip_pairs=none: this model takes landmarks; '
                       'name the left:right pairs that swap in a mirror')
    return []
  names = list(pipeline.records.read_metadata(data_dir).landmark_names)
  pairs = []
  for item in spec:
    left, sep, right = item.partition(':')
    if not sep or left not in names or right not in names or left == right:
      raise ValueError(f'--flip_pairs: {item!r} is not left:right of two '
                       f'landmarks of {names}')
    pairs.append((names.index(left), names.index(right)))
  return pairs


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, '.keras embedding model or SavedModel '
                      '(version folder or export base).')
  flags.DEFINE_string('data', None, 'Dataset folder from data_tools.convert.')
  flags.DEFINE_string('out', '', 'Folder for results.json, cmc.png, '
                      'ranked.png; default: eval/ beside --model.')
  flags.DEFINE_integer('batch_size', 64, 'Evaluation batch size.')
  flags.DEFINE_float('landmark_noise', 0.0, 'Robustness protocol (paper '
                     'Table 3): move every gallery and query landmark '
                     'uniformly within a disk of this radius (fraction of '
                     'the image size).')
  flags.DEFINE_integer('hide_landmarks', 0, 'Robustness protocol: hide this '
                       'many landmarks of every gallery and query image.')
  flags.DEFINE_list('flip_pairs', [], 'Test-time flipping: left:right '
                    'landmark name pairs that swap in a mirror image, e.g. '
                    'eye_l:eye_r,fin_l:fin_r. Only for bodies whose marks are '
                    'mirror-symmetric; "none" flips a model without '
                    'landmarks. The synthetic set declares none (its '
                    'patterns are not symmetric).')
  flags.DEFINE_enum('landmarks', 'annotated', ['annotated', 'predicted'],
                    'Landmarks of gallery and queries: the annotated ones, '
                    'or those --landmark_model finds.')
  flags.DEFINE_string('landmark_model', '', 'landmark_model.keras from '
                      'lmid_tf.train_landmarks, for --landmarks=predicted.')
  flags.DEFINE_bool('rerank', False, 'Rank by k-reciprocal re-ranking '
                    '(reranking.py; memory grows with (queries + gallery)^2).')
  flags.DEFINE_bool('match_viewpoint', False, 'Rank each query only against '
                    'gallery photos of its viewpoint (records\' viewpoint; '
                    'unknown viewpoints match all).')
  flags.DEFINE_integer('perturbation_seed', 0, 'Seed of the protocol\'s '
                       'draws (per image, whatever the batch size).')


def main(argv):
  del argv
  if not FLAGS.model or not FLAGS.data:
    raise app.UsageError('--model and --data are required')
  out = FLAGS.out or os.path.join(
      os.path.dirname(os.path.abspath(FLAGS.model.rstrip('/'))), 'eval')
  if FLAGS.landmark_noise < 0 or FLAGS.hide_landmarks < 0:
    raise ValueError('--landmark_noise and --hide_landmarks must be >= 0')
  perturbation = pipeline.Perturbation(
      FLAGS.landmark_noise, FLAGS.hide_landmarks, FLAGS.perturbation_seed)
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  if perturbation and not pre.num_landmarks:
    raise ValueError('--landmark_noise/--hide_landmarks: this model takes no '
                     'landmarks')
  flip_pairs = parse_flip_pairs(FLAGS.flip_pairs, FLAGS.data, pre)
  predictor = None
  if FLAGS.landmarks == 'predicted':
    if not FLAGS.landmark_model or not pre.num_landmarks:
      raise ValueError('--landmarks=predicted needs --landmark_model and a '
                       'model that takes landmarks')
    predictor = landmark_model.load(FLAGS.landmark_model)
    landmark_model.check_combination(pre, predictor[1])
  result = evaluate(embed_fn, FLAGS.data, pre, out, FLAGS.batch_size,
                    title=os.path.basename(FLAGS.model.rstrip('/')),
                    perturbation=perturbation, rerank=FLAGS.rerank,
                    flip_pairs=flip_pairs, predictor=predictor,
                    match_viewpoint=FLAGS.match_viewpoint)
  print(f'evaluate: {format_results(result.metrics)}; wrote {out}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'evaluate')

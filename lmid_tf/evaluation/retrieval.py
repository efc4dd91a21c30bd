"""Retrieval evaluation: embed gallery and query, rank, score, report."""

import dataclasses
import os

import numpy as np

from lmid_tf import artifacts
from lmid_tf.data import overlay
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess
from lmid_tf.data import records
from lmid_tf.evaluation import embedding as embedding_lib
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import reranking
from lmid_tf.evaluation import report


@dataclasses.dataclass
class Evaluation:
  """metrics: {'top1', 'top5', 'top10', 'mAP', 'queries', 'gallery', 'cmc'};
  gallery, query: embed_split's arrays; distances: [Q, G]."""
  metrics: dict
  gallery: dict
  query: dict
  distances: np.ndarray


def evaluate(embed_fn, data_dir: str, pre: preprocess.PreprocessConfig,
             out_dir: str = '', batch_size: int = 64, title: str = '',
             splits=('gallery', 'query'),
             perturbation: pipeline.Perturbation = None,
             rerank: bool = False, flip_pairs=None,
             predictor=None) -> Evaluation:
  """Embeds gallery and query, scores them, writes the outputs to out_dir
  (results.json, cmc.png, ranked.png) when it is given.

  `perturbation` applies the paper's noisy / missing landmark protocol to
  both sides; `rerank` ranks by k-reciprocal re-ranked distances;
  `flip_pairs` ([(left, right)] landmark indices) adds test-time flipping;
  `predictor` (landmark_model.load) replaces annotated landmarks with
  predicted ones on both sides."""
  gallery_split, query_split = splits
  gallery = embedding_lib.embed_split(embed_fn, pipeline.eval_dataset(
      data_dir, gallery_split, pre, batch_size, perturbation), pre,
      flip_pairs, predictor)
  query = embedding_lib.embed_split(embed_fn, pipeline.eval_dataset(
      data_dir, query_split, pre, batch_size, perturbation), pre, flip_pairs,
      predictor)
  distances = metrics_lib.distance_matrix(query['embeddings'],
                                         gallery['embeddings'])
  if rerank:
    distances = reranking.k_reciprocal(
        distances,
        metrics_lib.distance_matrix(query['embeddings'], query['embeddings']),
        metrics_lib.distance_matrix(gallery['embeddings'],
                                    gallery['embeddings']))
  metrics = metrics_lib.summary(distances, query['labels'], gallery['labels'])
  if perturbation:
    metrics['perturbation'] = dataclasses.asdict(perturbation)
  if rerank:
    metrics['reranked'] = True
  if flip_pairs is not None:
    metrics['flip_pairs'] = [list(p) for p in flip_pairs]
  if predictor is not None:
    metrics['landmarks'] = 'predicted'
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    artifacts.write_json(os.path.join(out_dir, 'results.json'), metrics)
    report.plot_cmc(metrics['cmc'], os.path.join(out_dir, 'cmc.png'), title)
    overlay.write_png(os.path.join(out_dir, 'ranked.png'),
                      report.ranked_sheet(query, gallery, distances))
  return Evaluation(metrics, gallery, query, distances)


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
  names = list(records.read_metadata(data_dir).landmark_names)
  pairs = []
  for item in spec:
    left, sep, right = item.partition(':')
    if not sep or left not in names or right not in names or left == right:
      raise ValueError(f'--flip_pairs: {item!r} is not left:right of two '
                       f'landmarks of {names}')
    pairs.append((names.index(left), names.index(right)))
  return pairs

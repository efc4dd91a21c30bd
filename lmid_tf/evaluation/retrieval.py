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
from lmid_tf.modeling import landmark_model


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
             predictor=None, match_viewpoint: bool = False,
             refine_radius: float = None) -> Evaluation:
  """Embeds gallery and query, scores them, writes the outputs to out_dir
  (results.json, cmc.png, ranked.png) when it is given.

  `perturbation` applies the paper's noisy / missing landmark protocol to
  both sides; `rerank` ranks by k-reciprocal re-ranked distances;
  `flip_pairs` ([(left, right)] landmark indices) adds test-time flipping;
  `predictor` (landmark_model.load) replaces annotated landmarks with
  predicted ones on both sides, or with `refine_radius` refines them
  (after any perturbation, as a predictor would refine noisy clicks);
  `match_viewpoint` ranks each query only against gallery photos of its
  viewpoint."""
  gallery_split, query_split = splits
  gallery = embedding_lib.embed_split(embed_fn, pipeline.eval_dataset(
      data_dir, gallery_split, pre, batch_size, perturbation), pre,
      flip_pairs, predictor, refine_radius)
  query = embedding_lib.embed_split(embed_fn, pipeline.eval_dataset(
      data_dir, query_split, pre, batch_size, perturbation), pre, flip_pairs,
      predictor, refine_radius)
  distances = metrics_lib.distance_matrix(query['embeddings'],
                                         gallery['embeddings'])
  if rerank:
    distances = reranking.k_reciprocal(
        distances,
        metrics_lib.distance_matrix(query['embeddings'], query['embeddings']),
        metrics_lib.distance_matrix(gallery['embeddings'],
                                    gallery['embeddings']))
  if match_viewpoint:
    distances = metrics_lib.restrict_to_viewpoint(
        distances, query['viewpoints'], gallery['viewpoints'])
  metrics = metrics_lib.summary(distances, query['labels'], gallery['labels'])
  if perturbation:
    metrics['perturbation'] = dataclasses.asdict(perturbation)
  if rerank:
    metrics['reranked'] = True
  if flip_pairs is not None:
    metrics['flip_pairs'] = [list(p) for p in flip_pairs]
  if predictor is not None and refine_radius is None:
    metrics['landmarks'] = 'predicted'
  elif predictor is not None:
    metrics['landmarks'] = 'refined'
    metrics['refine_radius'] = refine_radius
  if match_viewpoint:
    metrics['match_viewpoint'] = True
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


# What gallery and queries are embedded with: the records' landmarks, a
# predictor's in their place, or the records' refined by a predictor.
LANDMARK_SOURCES = ('annotated', 'predicted', 'refined')


def landmark_source(kind: str, landmark_model_path: str,
                    refine_radius: float,
                    pre: preprocess.PreprocessConfig) -> tuple:
  """A LANDMARK_SOURCES name -> (predictor or None, refine_radius or None),
  evaluate()'s two arguments; the predictor loaded and checked to fit the
  re-ID model `pre` describes."""
  if kind not in LANDMARK_SOURCES:
    raise ValueError(f'--landmarks={kind}: not one of {LANDMARK_SOURCES}')
  if kind == 'annotated':
    return None, None
  if not landmark_model_path or not pre.num_landmarks:
    raise ValueError(f'--landmarks={kind} needs --landmark_model and a '
                     'model that takes landmarks')
  if kind == 'refined' and not refine_radius > 0:
    raise ValueError(f'--refine_radius={refine_radius}: must be > 0')
  predictor = landmark_model.load(landmark_model_path, pre)
  return predictor, (refine_radius if kind == 'refined' else None)

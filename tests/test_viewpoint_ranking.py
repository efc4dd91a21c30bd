"""Ranking within a viewpoint (--match_viewpoint), with exact values."""

import numpy as np

from lmid_tf.evaluation import metrics
from lmid_tf.evaluation import retrieval

QUERY_LABELS = np.array([0, 1, 0, 2])
QUERY_VIEWS = np.array([b'left', b'right', b'', b'left'])
GALLERY_LABELS = np.array([0, 0, 1, 1, 2])
GALLERY_VIEWS = np.array([b'right', b'left', b'left', b'right', b'right'])
DISTANCES = np.array([[0.1, 0.5, 0.3, 0.4, 0.95],
                      [0.2, 0.6, 0.1, 0.7, 0.95],
                      [0.9, 0.2, 0.3, 0.1, 0.95],
                      [0.8, 0.8, 0.8, 0.8, 0.05]])


def test_across_viewpoints():
  ranked = metrics.ranking_metrics(DISTANCES, QUERY_LABELS, GALLERY_LABELS,
                                   max_rank=3)
  np.testing.assert_allclose(ranked['cmc'], [3 / 4, 1, 1])
  # APs: q0 (1 + 2/4) / 2, q1 the same, q2 (1/2 + 2/4) / 2, q3 1.
  assert ranked['mAP'] == np.mean([0.75, 0.75, 0.5, 1.0])
  assert ranked['queries'] == 4


def test_within_viewpoint():
  restricted = metrics.restrict_to_viewpoint(DISTANCES, QUERY_VIEWS,
                                              GALLERY_VIEWS)
  assert np.isinf(restricted[0]).tolist() == [True, False, False, True, True]
  # The unknown viewpoint (q2) is compared with all.
  assert np.isfinite(restricted[2]).all()
  ranked = metrics.ranking_metrics(restricted, QUERY_LABELS, GALLERY_LABELS,
                                   max_rank=3)
  # q0 (left) sees g2, g1: its match at rank 2; q1 (right) sees g0, g3 (g4
  # is another identity): rank 2; q2 as before: rank 2; q3 (left) has no
  # left photo of its identity: left out.
  np.testing.assert_allclose(ranked['cmc'], [0, 1, 1])
  assert ranked['mAP'] == 0.5
  assert ranked['queries'] == 3
  assert ranked['mINP'] == 0.5


def test_evaluate_ranks_records_within_their_viewpoint(tmp_path):
  import os
  import cv2
  import tensorflow as tf
  from data_tools import convert
  from lmid_tf.data import preprocess
  rng = np.random.default_rng(0)
  for i in range(4):
    os.makedirs(tmp_path / 'photos' / f'id{i}')
    for j, side in enumerate(('left', 'right', 'left', 'right')):
      cv2.imwrite(str(tmp_path / 'photos' / f'id{i}' / f'{j}_{side}.png'),
                  (rng.random((16, 16, 3)) * 255).astype(np.uint8))
  data = str(tmp_path / 'data')
  convert.convert(convert.ConvertConfig(
      images=str(tmp_path / 'photos'), out=data, test_fraction=0.5,
      viewpoints=('left', 'right'), progress=False))
  pre = preprocess.PreprocessConfig(
      image_size=16, channels=3, num_landmarks=0, radius=0.1, falloff=0.0,
      reconstruction_size=8, template=(), heatmap_channels=False,
      alignment='affine', landmark_names=())
  mean_colour = lambda inputs: tf.reduce_mean(inputs['image'], [1, 2])
  both = retrieval.evaluate(mean_colour, data, pre)
  within = retrieval.evaluate(mean_colour, data, pre, match_viewpoint=True)
  same = (within.query['viewpoints'][:, None]
          == within.gallery['viewpoints'][None, :])
  assert set(within.query['viewpoints']) == {b'left', b'right'}
  np.testing.assert_array_equal(np.isfinite(within.distances), same)
  np.testing.assert_allclose(within.distances[same], both.distances[same])
  expected = metrics.summary(
      np.where(same, both.distances, np.inf), both.query['labels'],
      both.gallery['labels'])
  assert within.metrics['mAP'] == expected['mAP']
  assert within.metrics['match_viewpoint'] is True

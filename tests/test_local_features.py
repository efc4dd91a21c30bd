"""The local-feature floor (benchmarks/local_features.py): RootSIFT, LNBNN's
votes by hand, ranking on made-up patterns, re-ranking a deep shortlist."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from benchmarks import local_features
from conftest import REPO
from data_tools import convert
from lmid_tf.evaluation import metrics


def test_lnbnn_votes_by_hand():
  # k = 3; photos 0 and 1 are one individual (0), photo 2 another (1),
  # photo 3 a third (2).
  individuals = np.array([0, 0, 1, 2])
  distances = np.array([[0.1, 0.2, 0.4, 1.0],    # background d4 = 1.0
                        [0.3, 0.5, 0.6, 0.7]])   # background d4 = 0.7
  photos = np.array([[0, 1, 2, 3],
                     [2, 2, 1, 0]])
  scores = local_features.lnbnn_votes(distances, photos, individuals, 4)
  # Descriptor 1: photo 0 votes 1.0 - 0.1; photo 1 is individual 0 again (no
  # vote); photo 2 votes 1.0 - 0.4; photo 3 is the background.
  # Descriptor 2: photo 2 votes 0.7 - 0.3 once (its second neighbour is the
  # same individual); photo 1 votes 0.7 - 0.6.
  np.testing.assert_allclose(scores, [0.9, 0.1, 0.6 + 0.4, 0.0])
  assert not local_features.lnbnn_votes(
      np.zeros([0, 4]), np.zeros([0, 4], int), individuals, 4).any()


def test_rootsift_is_unit_length_and_non_negative():
  descriptors = local_features.rootsift(_pattern(1), max_keypoints=50)
  assert 10 <= len(descriptors) <= 50
  assert descriptors.min() >= 0
  np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1,
                             atol=1e-5)
  blank = np.full((64, 64), 128, np.uint8)
  assert local_features.rootsift(blank).shape == (0, 128)


def _pattern(seed, shift=(0, 0), size=160):
  """An individual's pattern of random dark and light blobs on grey, moved
  by `shift` pixels (x, y) with its own noise: two photos of one animal."""
  rng = np.random.default_rng(seed)
  image = np.full((size, size), 128, np.uint8)
  for _ in range(40):
    x, y = rng.integers(10, size - 10, 2) + np.array(shift)
    axes = tuple(int(a) for a in rng.integers(3, 9, 2))
    cv2.ellipse(image, (int(x), int(y)), axes, float(rng.uniform(0, 180)),
                0, 360, int(rng.choice([20, 235])), -1)
  noise = np.random.default_rng([seed, *(s + 100 for s in shift)]).normal(0, 4, image.shape)
  return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_lnbnn_ranks_the_same_pattern_first():
  gallery_shift, query_shift = (-6, 4), (7, -5)
  gallery = [local_features.rootsift(_pattern(i, gallery_shift))
             for i in range(4)]
  query = [local_features.rootsift(_pattern(i, query_shift))
           for i in range(4)]
  labels = np.arange(4)
  scores = local_features.lnbnn_scores(query, gallery, labels,
                                       np.ones([4, 4], bool), k=3)
  assert scores.argmax(axis=1).tolist() == [0, 1, 2, 3]
  assert (scores >= 0).all()
  summary = metrics.summary(-scores, labels, labels)
  assert summary['top1'] == 1.0 and summary['mAP'] == 1.0
  # Only the allowed photos are searched and scored: query 0 barred from its
  # own individual's photo finds another.
  allowed = np.ones([4, 4], bool)
  allowed[0, 0] = False
  barred = local_features.lnbnn_scores(query, gallery, labels, allowed, k=3)
  assert barred[0, 0] == -np.inf and barred[0].argmax() != 0
  np.testing.assert_allclose(barred[1:], scores[1:])


def test_rerank_reorders_only_the_shortlist():
  deep = np.array([[0.1, 0.2, 0.3, 0.4, np.inf]])
  scores = np.array([[1.0, 5.0, 9.0, 100.0, 50.0]])
  ranks = local_features.rerank_top(deep, scores, top=3)
  # g0..g2 re-ordered by score (g2, g1, g0); g3 stays fourth; g4 is out.
  np.testing.assert_array_equal(ranks, [[2, 1, 0, 3, np.inf]])
  ties = local_features.rerank_top(deep, np.zeros_like(scores), top=3)
  np.testing.assert_array_equal(ties, [[0, 1, 2, 3, np.inf]])


@pytest.mark.slow
def test_benchmark_on_a_folder_of_patterns(tmp_path):
  photos, data = tmp_path / 'photos', str(tmp_path / 'data')
  for i in range(4):
    os.makedirs(photos / f'animal{i}')
    for j, shift in enumerate([(0, 0), (5, -3), (-4, 6)]):
      view = 'left' if j < 2 or i % 2 else 'right'
      cv2.imwrite(str(photos / f'animal{i}' / f'{j}_{view}photo.png'),
                  _pattern(i, shift))
  convert.convert(convert.ConvertConfig(
      images=str(photos), out=data, test_fraction=1.0, progress=False,
      gallery_per_identity=1, viewpoints=('left', 'right'), seed=0))
  out = tmp_path / 'out'
  run = subprocess.run(
      [sys.executable, '-m', 'benchmarks.local_features', f'--data={data}',
       f'--out={out}', '--k=2'], cwd=REPO, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  assert 'command: python -m benchmarks.local_features' in run.stdout
  for mode in ('within', 'across'):
    with open(out / f'lnbnn_{mode}.json') as f:
      result = json.load(f)
    assert result['top1'] == 1.0, (mode, result)

"""Retrieval metrics on hand-made distances, and the evaluation outputs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf import config
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess
from lmid_tf.data import records
from lmid_tf.evaluation import embedding as embedding_lib
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import retrieval


def test_cmc_and_map_exact_values():
  gallery_labels = np.array([1, 2, 3, 1, 2])
  query_labels = np.array([1, 2, 3, 9])  # identity 9 is not in the gallery
  distances = np.array([
      [0.1, 0.5, 0.6, 0.7, 0.8],   # 1: hits at ranks 1 and 4
      [0.1, 0.9, 0.2, 0.3, 0.4],   # 2: order g0 g2 g3 g4 g1 -> hits at 4, 5
      [0.5, 0.4, 0.3, 0.2, 0.1],   # 3: order g4 g3 g2 -> hit at 3
      [0.1, 0.2, 0.3, 0.4, 0.5],   # left out
  ])
  ranked = metrics_lib.ranking_metrics(distances, query_labels,
                                       gallery_labels, max_rank=5)
  assert ranked['queries'] == 3
  np.testing.assert_allclose(ranked['cmc'], [1 / 3, 1 / 3, 2 / 3, 1, 1])
  ap1 = (1 / 1 + 2 / 4) / 2
  ap2 = (1 / 4 + 2 / 5) / 2
  ap3 = 1 / 3
  assert ranked['mAP'] == pytest.approx((ap1 + ap2 + ap3) / 3)
  # mINP: |positives| / rank of the last positive.
  assert ranked['mINP'] == pytest.approx((2 / 4 + 2 / 5 + 1 / 3) / 3)


def test_by_visible_count_exact_values():
  # Five landmarks; queries with 5, 5, 4, 3, 1 visible and one with 4 whose
  # identity the gallery lacks (left out of its group).
  gallery_labels = np.array([1, 2, 3, 1, 2, 3])
  query_labels = np.array([1, 2, 3, 1, 2, 9])
  distances = np.array([
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # 1: hits at 1, 4
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # 2: hits at 2, 5
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # 3: hits at 3, 6
      [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # 1: order g5..g0, hits at 3, 6
      [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # 2: hits at 2, 5
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # 9: left out
  ])
  visible = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 0, 1, 1, 1],
                      [0, 1, 0, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 0]],
                     np.float32)
  groups = metrics_lib.by_visible_count(distances, query_labels,
                                        gallery_labels, visible)
  assert list(groups) == ['5', '4', '<=3']
  assert groups['5'] == pytest.approx({
      'top1': 0.5, 'top5': 1.0, 'queries': 2,
      'mAP': ((1 + 2 / 4) / 2 + (1 / 2 + 2 / 5) / 2) / 2,
      'mINP': (2 / 4 + 2 / 5) / 2})
  assert groups['4'] == pytest.approx({
      'top1': 0.0, 'top5': 1.0, 'queries': 1, 'mAP': (1 / 3 + 2 / 6) / 2,
      'mINP': 2 / 6})
  assert groups['<=3'] == pytest.approx({
      'top1': 0.0, 'top5': 1.0, 'queries': 2,
      'mAP': ((1 / 3 + 2 / 6) / 2 + (1 / 2 + 2 / 5) / 2) / 2,
      'mINP': (2 / 6 + 2 / 5) / 2})
  # The groups together are the whole: their queries add up, and top-1
  # weighted by queries is the overall top-1.
  overall = metrics_lib.summary(distances, query_labels, gallery_labels)
  assert sum(g['queries'] for g in groups.values()) == overall['queries']
  assert sum(g['top1'] * g['queries'] for g in groups.values()) == (
      pytest.approx(overall['top1'] * overall['queries']))


@pytest.mark.parametrize('num_landmarks, names', [
    (5, ['5', '4', '<=3']), (3, ['3', '2', '<=1'])])
def test_by_visible_count_groups_follow_the_landmark_count(num_landmarks,
                                                           names):
  distances = np.array([[0.1, 0.2]])
  visible = np.ones([1, num_landmarks])
  groups = metrics_lib.by_visible_count(distances, [1], [1, 2], visible)
  assert list(groups) == names
  assert groups[names[0]]['top1'] == 1.0 and groups[names[0]]['queries'] == 1
  # An empty group: no queries, zeros.
  assert groups[names[1]] == {'top1': 0.0, 'top5': 0.0, 'mAP': 0.0,
                              'mINP': 0.0, 'queries': 0}


def test_distance_matrix():
  q = np.array([[0, 0], [3, 4]], np.float32)
  g = np.array([[0, 0], [0, 1], [3, 0]], np.float32)
  np.testing.assert_allclose(metrics_lib.distance_matrix(q, g),
                             [[0, 1, 3], [5, np.sqrt(18), 4]], atol=1e-5)


def _split_labels(data_dir, split):
  import tensorflow as tf
  metadata = records.read_metadata(data_dir)
  return [int(records.parse(r, metadata.num_landmarks)['label'])
          for r in tf.data.TFRecordDataset(metadata.shard_paths(data_dir,
                                                                split))]


def test_evaluate_writes_results_and_pictures(tiny_dataset, tmp_path):
  """An embedding that is the identity label one-hot retrieves perfectly."""
  metadata = records.read_metadata(tiny_dataset)
  pre = config.preprocess_config(config.Settings(image_size=32), channels=1,
                                 num_landmarks=3)
  # evaluate() embeds the gallery, then the queries, each in file order.
  labels = (_split_labels(tiny_dataset, 'gallery')
            + _split_labels(tiny_dataset, 'query'))
  seen = []

  def one_hot_of_label(inputs):
    seen.append(sorted(inputs))
    batch = [labels.pop(0) for _ in range(len(inputs['image']))]
    return np.eye(len(metadata.identities), dtype=np.float32)[batch]

  result = retrieval.evaluate(one_hot_of_label, tiny_dataset, pre,
                             str(tmp_path), batch_size=7)
  assert not labels, 'every image embedded once'
  assert seen[0] == ['heatmaps', 'image']
  with open(tmp_path / 'results.json') as f:
    saved = json.load(f)
  assert saved == result.metrics
  assert saved['queries'] == metadata.splits['query']['images']
  assert saved['gallery'] == metadata.splits['gallery']['images']
  assert saved['top1'] == 1.0 and saved['mAP'] == 1.0
  assert result.distances.shape == (saved['queries'], saved['gallery'])
  for name in ('cmc.png', 'ranked.png'):
    assert os.path.getsize(tmp_path / name) > 1000, name


def _perturbed_split(data_dir, split, pre, perturbation, predictor):
  """(landmarks, visible) a split's records have after `perturbation`, and
  the predictor's prediction on its images, joined over the batches."""
  from lmid_tf.modeling import landmark_model
  net, predictor_pre = predictor
  parts = {'landmarks': [], 'visible': [], 'predicted': [], 'confidence': []}
  for batch in pipeline.eval_dataset(data_dir, split, pre, 5, perturbation):
    images = tf.image.resize(batch['raw_image'], [predictor_pre.image_size] * 2,
                             antialias=True)
    found = landmark_model.predict_images(net, images, predictor_pre.channels)
    parts['landmarks'].append(batch['landmarks'].numpy())
    parts['visible'].append(batch['visible'].numpy())
    parts['predicted'].append(found['landmarks'].numpy())
    parts['confidence'].append(found['visibility'].numpy())
  return {k: np.concatenate(v) for k, v in parts.items()}


def test_refined_landmarks_refine_the_perturbed_clicks(
    trained_run, confident_landmark_model, tiny_dataset):
  """Noise first, then refinement: a radius that reaches everywhere gives
  the predictor's landmarks where the noisy ones were visible, one that
  reaches nowhere the noisy ones, and both keep the noisy visibility."""
  embed_fn, pre = artifacts.load_embedder(
      os.path.join(trained_run, 'embedding_model.keras'))
  noise = pipeline.Perturbation(0.1, 1, 3)
  predictor, radius = retrieval.landmark_source(
      'refined', confident_landmark_model, 0.15, pre)
  assert radius == 0.15
  by_hand = {split: _perturbed_split(tiny_dataset, split, pre, noise,
                                     predictor)
             for split in ('gallery', 'query')}
  assert np.all(by_hand['query']['confidence'] > 0.99)
  noisy = retrieval.evaluate(embed_fn, tiny_dataset, pre, batch_size=7,
                             perturbation=noise)
  for radius, expect in ((10.0, 'predicted'), (1e-9, 'landmarks'),
                         (0.15, None)):
    result = retrieval.evaluate(embed_fn, tiny_dataset, pre, batch_size=7,
                                perturbation=noise, predictor=predictor,
                                refine_radius=radius)
    assert result.metrics['landmarks'] == 'refined'
    assert result.metrics['refine_radius'] == radius
    for split in ('gallery', 'query'):
      hand, got = by_hand[split], getattr(result, split)
      np.testing.assert_array_equal(got['visible'], hand['visible'])
      shown = hand['visible'][..., None] > 0
      if expect == 'predicted':
        np.testing.assert_allclose(got['landmarks'], np.where(
            shown, hand['predicted'], hand['landmarks']), atol=1e-6)
      elif expect == 'landmarks':
        np.testing.assert_array_equal(got['landmarks'], hand['landmarks'])
      else:
        near = np.linalg.norm(hand['predicted'] - hand['landmarks'],
                              axis=-1) <= 0.15
        np.testing.assert_allclose(got['landmarks'], np.where(
            shown & near[..., None], hand['predicted'], hand['landmarks']),
                                   atol=1e-6)
    if expect == 'landmarks':
      np.testing.assert_array_equal(result.distances, noisy.distances)
    else:
      assert np.abs(result.distances - noisy.distances).max() > 1e-3
  assert retrieval.landmark_source('annotated', '', 0.15, pre) == (None, None)
  with pytest.raises(ValueError, match='needs --landmark_model'):
    retrieval.landmark_source('refined', '', 0.15, pre)
  with pytest.raises(ValueError, match='must be > 0'):
    retrieval.landmark_source('refined', confident_landmark_model, 0.0, pre)


@pytest.mark.slow
def test_evaluate_and_robustness_with_refined_landmarks(
    trained_run, confident_landmark_model, tiny_dataset, tmp_path):
  import subprocess
  import sys
  from conftest import REPO
  model = os.path.join(trained_run, 'embedding_model.keras')
  given = [f'--model={model}', f'--data={tiny_dataset}', '--landmarks=refined']
  flags = given + [f'--landmark_model={confident_landmark_model}']
  tool = lambda module, *args: subprocess.run(
      [sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
      text=True)

  def written(module, out, name, *args):
    done = tool(module, *flags, *args, f'--out={tmp_path}/{out}')
    assert done.returncode == 0, done.stderr
    with open(tmp_path / out / name) as f:
      return json.load(f)

  saved = written('lmid_tf.evaluate', 'eval', 'results.json',
                  '--refine_radius=0.2')
  assert (saved['landmarks'], saved['refine_radius']) == ('refined', 0.2)
  assert saved['queries'] == 24
  row = written('benchmarks.robustness', 'rows', 'noise_0.1.json',
                '--rows=clean,noise:0.1')
  assert (row['landmarks'], row['refine_radius']) == ('refined', 0.15)
  assert row['perturbation']['displacement'] == 0.1
  missing = tool('lmid_tf.evaluate', *given)
  assert missing.returncode == 1
  assert '--landmarks=refined needs --landmark_model' in missing.stderr


def test_load_embedder_rejects_unknown_files(tmp_path):
  with pytest.raises(ValueError, match='expected a .keras file'):
    artifacts.load_embedder(str(tmp_path / 'model.h5'))
  with pytest.raises(ValueError, match='numbered versions'):
    artifacts.load_embedder(str(tmp_path))


@pytest.mark.slow
def test_heatmap_ablation_variants():
  import tensorflow as tf
  from benchmarks import heatmap_ablation
  maps = tf.stack([tf.fill([2, 2, 3], float(i + 1)) for i in range(3)])
  inputs = {'image': tf.zeros([3, 2, 2, 1]), 'heatmaps': maps}
  seen = lambda x: x['heatmaps'].numpy()
  np.testing.assert_array_equal(
      heatmap_ablation.altered(seen, 'true')(inputs), maps)
  hidden = heatmap_ablation.altered(seen, 'last landmark hidden')(inputs)
  assert hidden[..., 2].max() == 0 and hidden[..., :2].min() == 1
  assert heatmap_ablation.altered(seen, 'all zero')(inputs).max() == 0
  shuffled = heatmap_ablation.altered(seen, "another image's")(inputs)
  np.testing.assert_array_equal(shuffled[:, 0, 0, 0], [3, 1, 2])


@pytest.mark.slow
def test_landmark_oracle_alignment_matches_the_same_identity():
  from benchmarks import landmark_oracle
  from data_tools import synthetic
  size = 64
  cfg = synthetic.SynthConfig(size=size, noise_std=0.0)
  rng = np.random.default_rng(3)
  patterns = [synthetic.seed_pattern(rng, cfg) for _ in range(2)]
  split = {'images': [], 'landmarks': [], 'visible': []}
  for pattern in (patterns[0], patterns[0], patterns[1]):
    while True:  # an example whose three landmarks are all in the frame
      image, landmarks, visible = synthetic.render_example(pattern, rng, cfg)
      if visible.all():
        break
    split['images'].append(image[..., None])
    split['landmarks'].append(landmarks / size)
    split['visible'].append(visible)
  aligned = landmark_oracle.descriptors(split, size, align=True)
  plain = landmark_oracle.descriptors(split, size, align=False)
  np.testing.assert_allclose(np.linalg.norm(aligned, axis=1), 1, atol=1e-5)
  same, other = aligned[0] @ aligned[1], aligned[0] @ aligned[2]
  assert same > 0.7 and same > other + 0.2
  assert same > plain[0] @ plain[1]
  histograms = landmark_oracle.distance_histograms(split, size)
  assert histograms[0] @ histograms[1] > histograms[0] @ histograms[2] + 0.2


def _two_clusters():
  """Queries q0 (cluster A) and q1 (B); gallery g0, g1 in A, g2, g3 in B."""
  points = {'q0': 0.0, 'q1': 10.0, 'g0': 0.5, 'g1': -0.5, 'g2': 10.5,
            'g3': 9.5}
  q = np.array([[points['q0']], [points['q1']]])
  g = np.array([[points[k]] for k in ('g0', 'g1', 'g2', 'g3')])
  return (metrics_lib.distance_matrix(q, g), metrics_lib.distance_matrix(q, q),
          metrics_lib.distance_matrix(g, g))


def test_rerank_exact_values_on_two_clusters():
  from lmid_tf.evaluation import reranking
  qg, qq, gg = _two_clusters()
  # Normalised squared distances, as the method uses them: column max 10.5^2.
  everything = np.block([[qq, qg], [qg.T, gg]]) ** 2
  normalised = everything / everything.max(axis=0, keepdims=True)
  # lambda = 1: the original distances, exactly.
  np.testing.assert_allclose(
      reranking.k_reciprocal(qg, qq, gg, k1=2, k2=1, lambda_value=1.0),
      normalised[:2, 2:], rtol=1e-6)
  # Across clusters no neighbour is shared: Jaccard distance exactly 1.
  mixed = reranking.k_reciprocal(qg, qq, gg, k1=2, k2=1, lambda_value=0.3)
  np.testing.assert_allclose(mixed[0, 2:], 0.7 + 0.3 * normalised[0, 4:],
                             rtol=1e-6)
  np.testing.assert_allclose(mixed[1, :2], 0.7 + 0.3 * normalised[1, 2:4],
                             rtol=1e-6)
  # Within a cluster, shared neighbours pull the distance below that.
  assert mixed[0, :2].max() < 0.7 and mixed[1, 2:].max() < 0.7
  ranked = metrics_lib.ranking_metrics(mixed, np.array([0, 1]),
                                       np.array([0, 0, 1, 1]))
  assert ranked['cmc'][0] == 1.0 and ranked['mAP'] == 1.0


def test_flipping_mirrors_images_and_swaps_declared_pairs(tiny_dataset):
  pre = config.preprocess_config(config.Settings(image_size=32), channels=1,
                                 num_landmarks=3)
  batch = next(iter(pipeline.eval_dataset(tiny_dataset, 'query', pre, 4)))
  mirrored = embedding_lib.mirrored_inputs(batch, pre, [(1, 2)])
  np.testing.assert_allclose(mirrored['image'],
                             batch['image'][:, :, ::-1], atol=1e-6)
  # Channel 1 of the mirror is channel 2 of the original, mirrored.
  np.testing.assert_allclose(mirrored['heatmaps'][..., 1],
                             batch['heatmaps'][:, :, ::-1, 2], atol=1e-5)
  np.testing.assert_allclose(mirrored['heatmaps'][..., 0],
                             batch['heatmaps'][:, :, ::-1, 0], atol=1e-5)
  # A mirror-symmetric embedding is unchanged by flipping.
  symmetric = lambda x: tf.reduce_sum(x['image'] + x['image'][:, :, ::-1],
                                      axis=[1, 2]).numpy() + 1.0
  once = embedding_lib.embed_split(symmetric, [batch])
  flipped = embedding_lib.embed_split(symmetric, [batch], pre, [(1, 2)])
  np.testing.assert_allclose(flipped['embeddings'],
                             np.sign(once['embeddings']), atol=1e-5)
  assert retrieval.parse_flip_pairs(['base_left:base_right'], tiny_dataset,
                                   pre) == [(1, 2)]
  with pytest.raises(ValueError, match='not left:right'):
    retrieval.parse_flip_pairs(['apex:nose'], tiny_dataset, pre)
  with pytest.raises(ValueError, match='takes landmarks'):
    retrieval.parse_flip_pairs(['none'], tiny_dataset, pre)



def test_flipping_a_model_without_landmarks():
  # --flip_pairs=none (no pairs, K = 0) once failed: tf.gather took the
  # empty channel order for floats.
  pre = config.preprocess_config(config.Settings(image_size=8), channels=3,
                                 num_landmarks=0)
  raw = tf.random.stateless_uniform([2, 8, 8, 3], seed=[0, 1])
  batch = {'raw_image': raw, 'image': preprocess.normalise(raw, 3),
           'landmarks': tf.zeros([2, 0, 2]), 'visible': tf.zeros([2, 0]),
           'label': tf.constant([0, 1]), 'name': tf.constant([b'a', b'b']),
           'path': tf.constant([b'a.jpg', b'b.jpg']),
           'viewpoint': tf.constant([b'', b''])}
  mirrored = embedding_lib.mirrored_inputs(batch, pre, [])
  assert sorted(mirrored) == ['image']
  np.testing.assert_allclose(mirrored['image'], batch['image'][:, :, ::-1],
                             atol=1e-6)
  # The first four pixels of the top row: not mirror-symmetric.
  corner = lambda x: x['image'][:, 0, :4, 0].numpy()
  flipped = embedding_lib.embed_split(corner, [batch], pre, [])
  image = batch['image'].numpy()
  expected = image[:, 0, :4, 0] + image[:, 0, :-5:-1, 0]
  expected /= np.linalg.norm(expected, axis=1, keepdims=True)
  np.testing.assert_allclose(flipped['embeddings'], expected, atol=1e-5)
  assert flipped['landmarks'].shape == (2, 0, 2)
  assert retrieval.parse_flip_pairs(['none'], '', pre) == []


def test_robustness_groups_by_the_annotated_visibility(tiny_dataset):
  # What evaluate() embeds, in its order: the grouping of an image-only
  # model's queries (whose inputs carry no landmarks) comes from the records.
  from benchmarks import robustness
  labels, visible = robustness.annotated_visibility(tiny_dataset, 'query')
  pre = config.preprocess_config(config.Settings(image_size=32), channels=1,
                                 num_landmarks=3)
  batches = list(pipeline.eval_dataset(tiny_dataset, 'query', pre, 5))
  np.testing.assert_array_equal(
      labels, np.concatenate([b['label'] for b in batches]))
  np.testing.assert_array_equal(
      visible, np.concatenate([b['visible'] for b in batches]))
  assert visible.shape == (len(labels), 3)


@pytest.mark.slow
def test_robustness_benchmark_rows():
  from benchmarks import robustness
  assert robustness.parse_row('clean', 3) == pipeline.Perturbation(0.0, 0, 3)
  assert robustness.parse_row('noise:0.1', 3) == pipeline.Perturbation(
      0.1, 0, 3)
  assert robustness.parse_row('hide:2', 0) == pipeline.Perturbation(0.0, 2, 0)
  for bad in ('noise', 'hide:x', 'blur:1'):
    with pytest.raises(ValueError, match='is not clean, noise:R or hide:K'):
      robustness.parse_row(bad, 0)
  table = robustness.format_by_visible('clean', {
      '5': {'top1': 0.5, 'top5': 1.0, 'mAP': 0.25, 'mINP': 0.1, 'queries': 2},
      '<=3': {'top1': 0.0, 'top5': 0.0, 'mAP': 0.0, 'mINP': 0.0,
              'queries': 0}}).splitlines()
  assert table[0] == 'clean: by visible landmarks in the query'
  assert table[2].split() == ['5', '2', '50.00%', '100.00%', '25.00%']
  assert table[3].split() == ['<=3', '0', '-', '-', '-']

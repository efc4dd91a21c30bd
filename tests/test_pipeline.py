"""tf.data pipelines: P x K batches, determinism, evaluation order."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_dataset, tiny_settings
from lmid_tf import config
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess


def _pre(data, landmarks=True, size=32):
  return config.build(tiny_settings(
      data, image_size=size,
      variant='landmark_id' if landmarks else 'baseline')).preprocess


def _inputs(**settings):
  """TrainInputConfig through config, as training builds it."""
  return config.input_config(tiny_settings(**settings))


@pytest.mark.parametrize('p,k', [(4, 2), (3, 4)])
def test_pk_batches(tiny_dataset, p, k):
  cfg = _inputs(identities_per_batch=p, images_per_identity=k)
  dataset = pipeline.train_dataset(tiny_dataset, _pre(tiny_dataset), cfg)
  _, serialized, labels = pipeline.load_train_records(tiny_dataset)
  per_identity = collections.Counter(labels.tolist())
  for inputs, targets in dataset.take(3):
    batch = targets['label'].numpy()
    assert batch.shape == (p * k,)
    groups = batch.reshape(p, k)
    assert np.all(groups == groups[:, :1])           # K of one identity
    assert len(set(groups[:, 0])) == p               # P distinct identities
    assert inputs['image'].shape == (p * k, 32, 32, 1)
    assert inputs['heatmaps'].shape == (p * k, 32, 32, 3)
    assert targets['heatmaps'].shape == (p * k, 64, 64, 3)
  # Every train identity here has 3 images: K=2 draws distinct images.
  assert set(per_identity.values()) == {3}


def test_replicas_get_whole_identities(tiny_dataset):
  pre = _pre(tiny_dataset)
  cfg = _inputs(identities_per_batch=4, images_per_identity=2)

  def labels(**split):
    dataset = pipeline.train_dataset(tiny_dataset, pre, cfg, start_step=5,
                                     **split)
    return [y['label'].numpy() for _, y in dataset.take(2)]

  whole = labels()[0]
  shares = [labels(num_replicas=2, replicas=(r,))[0] for r in (0, 1)]
  for share in shares:
    assert share.shape == (4,)                   # 2 identities x K = 2
    groups = share.reshape(2, 2)
    assert np.all(groups == groups[:, :1])
  assert not set(shares[0]) & set(shares[1])     # no identity on both
  # Batch 5 split over two replicas is batch 5 of one device.
  np.testing.assert_array_equal(np.concatenate(shares), whole)
  # One input pipeline feeding both replicas yields their shares in turn.
  both = labels(num_replicas=2, replicas=(0, 1))
  np.testing.assert_array_equal(both[0], shares[0])
  np.testing.assert_array_equal(both[1], shares[1])
  with pytest.raises(ValueError, match='whole identities'):
    pipeline.train_dataset(tiny_dataset, pre, _inputs(identities_per_batch=3),
                           num_replicas=2, replicas=(0,))


def test_pk_indices_without_and_with_replacement():
  # Identity 0 has 5 images (positions 0-4), identity 1 has 2 (5-6).
  order = tf.range(7, dtype=tf.int64)
  starts, counts = tf.constant([0, 5]), tf.constant([5, 2])
  for step in range(20):
    indices = pipeline.pk_indices(step, order, starts, counts, 2, 3, 0)
    groups = indices.numpy().reshape(2, 3)
    for group in groups:
      if group[0] < 5:
        assert len(set(group)) == 3 and set(group) <= set(range(5))
      else:
        assert set(group) <= {5, 6}


def test_deterministic_under_a_seed(tiny_dataset):
  pre = _pre(tiny_dataset)

  def first_batches(seed):
    cfg = _inputs(identities_per_batch=4, images_per_identity=2, seed=seed)
    return [(x['image'].numpy(), x['heatmaps'].numpy(), y['label'].numpy())
            for x, y in pipeline.train_dataset(tiny_dataset, pre, cfg).take(2)]

  a, b, c = first_batches(1), first_batches(1), first_batches(2)
  for x, y in zip(a, b):
    for u, v in zip(x, y):
      np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[0][0], c[0][0])


def test_baseline_gets_no_heatmaps(tiny_dataset):
  cfg = _inputs(identities_per_batch=2, images_per_identity=2)
  inputs, targets = next(iter(pipeline.train_dataset(
      tiny_dataset, _pre(tiny_dataset, landmarks=False), cfg)))
  assert set(inputs) == {'image'}
  assert set(targets) == {'label', 'landmarks', 'visible'}   # no heatmaps


def test_too_few_identities_is_a_clear_error(tiny_dataset):
  cfg = _inputs(identities_per_batch=50)
  with pytest.raises(ValueError, match='fewer than identities_per_batch=50'):
    pipeline.train_dataset(tiny_dataset, _pre(tiny_dataset), cfg)


def test_eval_dataset_fixed_order_and_inputs(tiny_dataset):
  pre = _pre(tiny_dataset)
  batches = list(pipeline.eval_dataset(tiny_dataset, 'query', pre, 5))
  index = np.concatenate([b['index'].numpy() for b in batches])
  np.testing.assert_array_equal(index, np.arange(len(index)))
  again = list(pipeline.eval_dataset(tiny_dataset, 'query', pre, 5))
  np.testing.assert_array_equal(batches[0]['image'], again[0]['image'])
  # Unaugmented: heatmaps are rendered from the stored landmarks.
  first = batches[0]
  expected = preprocess.model_inputs(first['raw_image'], first['landmarks'],
                                     first['visible'], pre)
  np.testing.assert_allclose(first['heatmaps'], expected['heatmaps'])
  np.testing.assert_allclose(
      preprocess.denormalise(first['image'], 1), first['raw_image'],
      atol=1e-5)


def test_colour_data_and_missing_split(tmp_path):
  data = make_dataset(tmp_path, identities=2, size=32)
  pre = config.preprocess_config(tiny_settings(image_size=16), channels=3,
                                 num_landmarks=3)
  batch = next(iter(pipeline.eval_dataset(data, 'gallery', pre, 4)))
  assert batch['image'].shape == (4, 16, 16, 3)
  with pytest.raises(ValueError, match="no split 'val'"):
    pipeline.eval_dataset(data, 'val', pre)


def test_show_batch_picture(tiny_dataset):
  from lmid_tf import show_batch
  cfg = config.build(tiny_settings(tiny_dataset, identities_per_batch=3,
                                   images_per_identity=2))
  picture = show_batch.render_batch(cfg, scale=2)
  # 3 rows x 2 columns of 64-px tiles with 2-px borders.
  assert picture.shape == (3 * 68, 2 * 68, 3)
  # Heatmap colours are present: some pixels are far from gray.
  spread = picture.max(axis=2).astype(int) - picture.min(axis=2)
  assert (spread > 60).mean() > 0.01


@pytest.mark.slow
def test_show_batch_shows_what_a_flagfile_trains_on(tiny_dataset, tmp_path):
  """The CLI takes the training flagfile: its P x K, size and augmentation."""
  import cv2
  import subprocess
  import sys
  from conftest import REPO
  from lmid_tf import show_batch
  flagfile = tmp_path / 'x.flags'
  flagfile.write_text('--image_size=32\n--identities_per_batch=2\n'
                      '--images_per_identity=3\n--rotation=0\n--zoom=0\n'
                      '--translation=0\n--nonla\n--nomla\n'
                      '--phase=a trains=all lr=1 epochs=1\n')
  out = tmp_path / 'batch.png'
  result = subprocess.run(
      [sys.executable, '-m', 'lmid_tf.show_batch', f'--flagfile={flagfile}',
       f'--data={tiny_dataset}', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert 'rotation 0 deg' in result.stdout
  assert result.stderr == '', 'quiet: no TensorFlow log lines'
  picture = cv2.imread(str(out))
  assert picture.shape == (2 * 68, 3 * 68, 3)
  # The same config through the library gives the same picture: with no
  # augmentation the tiles are the stored images, unrotated.
  settings = config.from_flagfile(str(flagfile), data=tiny_dataset)
  expected = show_batch.render_batch(config.build(settings))
  np.testing.assert_array_equal(picture, expected)


def test_robustness_protocol_is_seeded_per_image_with_intended_sizes(
    tiny_dataset):
  pre = _pre(tiny_dataset)
  clean = list(pipeline.eval_dataset(tiny_dataset, 'query', pre, 5))
  protocol = pipeline.Perturbation(displacement=0.1, hidden=1, seed=3)
  noisy = list(pipeline.eval_dataset(tiny_dataset, 'query', pre, 5, protocol))
  rebatched = list(pipeline.eval_dataset(tiny_dataset, 'query', pre, 7,
                                         protocol))
  other_seed = list(pipeline.eval_dataset(
      tiny_dataset, 'query', pre, 5, pipeline.Perturbation(0.1, 1, 4)))
  cat = lambda batches, key: np.concatenate([b[key].numpy() for b in batches])
  before, after = cat(clean, 'visible'), cat(noisy, 'visible')
  # Exactly one visible landmark hidden per image, a subset of the visible.
  np.testing.assert_array_equal(after.sum(1), before.sum(1) - 1)
  assert np.all(after <= before)
  kept = after > 0
  moved = np.linalg.norm(cat(noisy, 'landmarks') - cat(clean, 'landmarks'),
                         axis=-1)[kept]
  assert moved.max() <= 0.1 + 1e-6
  # Uniform over the disk: mean distance 2r/3.
  assert moved.mean() == pytest.approx(0.1 * 2 / 3, abs=0.02)
  np.testing.assert_array_equal(cat(noisy, 'landmarks'),
                                cat(rebatched, 'landmarks'))
  assert not np.array_equal(cat(noisy, 'landmarks'),
                            cat(other_seed, 'landmarks'))
  # The model inputs are rendered from the perturbed landmarks.
  expected = preprocess.model_inputs(noisy[0]['raw_image'],
                                     noisy[0]['landmarks'],
                                     noisy[0]['visible'], pre)
  np.testing.assert_allclose(noisy[0]['heatmaps'], expected['heatmaps'])

"""Joint augmentation: landmarks follow the image content."""

import math

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf import augment
from lmid_tf import config
from lmid_tf import heatmaps

SIZE = 64


def _dot_image(points, size=SIZE, sigma=1.0):
  """[1, S, S, 1] image with a small Gaussian dot at each normalised point."""
  ys, xs = np.mgrid[:size, :size] + 0.5
  image = np.zeros((size, size), np.float32)
  for x, y in points:
    image += np.exp(-((xs - x * size) ** 2 + (ys - y * size) ** 2)
                    / (2 * sigma ** 2))
  return tf.constant(image[None, :, :, None])


def _centroid(channel):
  ys, xs = np.mgrid[:channel.shape[0], :channel.shape[1]] + 0.5
  return np.array([(xs * channel).sum(), (ys * channel).sum()]) / channel.sum()


@pytest.mark.parametrize('angle,scale,tx,ty', [
    (30.0, 1.0, 0.0, 0.0), (90.0, 1.2, 5.0, -3.0), (200.0, 0.8, -6.0, 4.0),
    (0.0, 1.0, 8.0, 8.0)])
def test_heatmap_follows_the_image_content(angle, scale, tx, ty):
  point = (0.35, 0.6)
  image = _dot_image([point])
  forward = augment.affine_matrices(
      tf.constant([math.radians(angle)]), tf.constant([scale]),
      tf.constant([tx]), tf.constant([ty]), SIZE, SIZE)
  warped = augment.warp_images(image, forward).numpy()[0, :, :, 0]
  landmarks, visible = augment.transform_landmarks(
      tf.constant([[point]]), tf.constant([[1.0]]), forward, SIZE, SIZE)
  # Leave out the mean-valued fill around the warped frame.
  dot = np.where(warped > 0.05, warped, 0)
  np.testing.assert_allclose(landmarks.numpy()[0, 0] * SIZE, _centroid(dot),
                             atol=0.3)
  assert visible.numpy()[0, 0] == 1
  maps = heatmaps.render(landmarks, visible, SIZE, SIZE, 0.05).numpy()
  np.testing.assert_allclose(_centroid(maps[0, :, :, 0]), _centroid(dot),
                             atol=0.3)


def test_landmark_leaving_the_frame_becomes_invisible():
  forward = augment.affine_matrices(tf.constant([0.0]), tf.constant([1.0]),
                                    tf.constant([40.0]), tf.constant([0.0]),
                                    SIZE, SIZE)
  landmarks, visible = augment.transform_landmarks(
      tf.constant([[[0.2, 0.5], [0.8, 0.5]]]), tf.constant([[1.0, 1.0]]),
      forward, SIZE, SIZE)
  np.testing.assert_array_equal(visible.numpy(), [[1, 0]])
  np.testing.assert_allclose(landmarks.numpy()[0, 0], [0.2 + 40 / 64, 0.5],
                             atol=1e-5)


def test_fill_takes_the_image_mean():
  image = tf.fill([1, SIZE, SIZE, 1], 0.7)
  forward = augment.affine_matrices(tf.constant([0.7]), tf.constant([0.5]),
                                    tf.constant([0.0]), tf.constant([0.0]),
                                    SIZE, SIZE)
  np.testing.assert_allclose(augment.warp_images(image, forward), 0.7,
                             atol=1e-5)


def test_batch_augmentation_is_per_sample_and_seeded():
  points = tf.tile(tf.constant([[[0.3, 0.4], [0.6, 0.7]]]), [8, 1, 1])
  images = tf.tile(_dot_image([(0.3, 0.4), (0.6, 0.7)]), [8, 1, 1, 1])
  cfg = config.augment_config(config.Settings())
  seed = tf.constant([1, 2])
  a = augment.augment_batch(images, points, tf.ones([8, 2]), cfg, seed)
  b = augment.augment_batch(images, points, tf.ones([8, 2]), cfg, seed)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.numpy(), y.numpy())
  moved = a[1].numpy()
  assert len({tuple(np.round(m[0], 4)) for m in moved}) == 8  # per sample
  in_graph = tf.data.Dataset.from_tensors(
      (images, points, tf.ones([8, 2]))).map(
          lambda i, p, v: augment.augment_batch(i, p, v, cfg, seed))
  for x, y in zip(next(iter(in_graph)), a):
    np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)


def test_photometric_changes_only_intensity():
  images = tf.random.stateless_uniform([4, 8, 8, 1], [0, 0])
  cfg = config.augment_config(config.Settings(brightness=0.2, contrast=0.3))
  out = augment.photometric(images, cfg, tf.constant([0, 1])).numpy()
  assert out.min() >= 0 and out.max() <= 1
  assert not np.allclose(out, images.numpy())
  unchanged = augment.photometric(images,
                                  config.augment_config(config.Settings()),
                                  tf.constant([0, 1]))
  np.testing.assert_array_equal(unchanged, images)

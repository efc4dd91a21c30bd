"""Joint augmentation: landmarks follow the image content."""

import math

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf.data import augment
from lmid_tf import config
from lmid_tf.data import heatmaps

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


def test_erasing_fills_one_rectangle_on_about_half_the_images():
  images = tf.fill([400, 32, 32, 1], 0.25)
  out = augment.erase_rectangles(images, 0.2, tf.constant([3, 4])).numpy()
  changed = out != 0.25
  hit = changed.any(axis=(1, 2, 3))
  assert 0.4 < hit.mean() < 0.6                     # probability 0.5
  areas = changed[hit].mean(axis=(1, 2, 3))
  # 2 % to 20 % of the area (less where the rectangle leaves the frame).
  assert areas.max() <= 0.2 + 2 / 32 and areas.min() > 0
  for mask in changed[hit][:20, ..., 0]:            # one axis-aligned box
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.mean() > 0.95    # filled, bar noise equal to 0.25 by chance
  again = augment.erase_rectangles(images, 0.2, tf.constant([3, 4])).numpy()
  np.testing.assert_array_equal(out, again)         # seeded


def test_lighting_darkens_along_one_direction_by_at_most_the_strength():
  images = tf.ones([200, 16, 16, 3])
  out = augment.lighting_gradient(images, 0.5, tf.constant([5, 6])).numpy()
  assert out.max() <= 1.0 and out.min() >= 0.5 - 1e-6
  darkest = out.min(axis=(1, 2, 3))
  assert darkest.min() < 0.55 and darkest.max() > 0.95   # a in [0, 0.5]
  np.testing.assert_array_equal(out[..., 0], out[..., 2])  # all channels
  # A ramp: along each row and each column, light changes monotonically.
  first = out[np.argmin(darkest), :, :, 0]
  for line in list(first) + list(first.T):
    steps = np.diff(line)
    assert (steps >= -1e-6).all() or (steps <= 1e-6).all()


def test_erasing_and_lighting_leave_the_geometry_unchanged():
  points = tf.tile(tf.constant([[[0.3, 0.4], [0.6, 0.7]]]), [8, 1, 1])
  images = tf.tile(_dot_image([(0.3, 0.4), (0.6, 0.7)]), [8, 1, 1, 1])
  plain = config.augment_config(config.Settings())
  field = config.augment_config(config.Settings(erase=0.3, lighting=0.5))
  seed = tf.constant([1, 2])
  a = augment.augment_batch(images, points, tf.ones([8, 2]), plain, seed)
  b = augment.augment_batch(images, points, tf.ones([8, 2]), field, seed)
  np.testing.assert_array_equal(a[1], b[1])          # landmarks
  np.testing.assert_array_equal(a[2], b[2])          # visibility
  assert not np.allclose(a[0], b[0])
  with pytest.raises(ValueError, match='--erase=1.5'):
    config.resolve(config.Settings(erase=1.5, schedule='a trains=all lr=1e-3 '
                                                    'epochs=1'), 10, 1, 3)

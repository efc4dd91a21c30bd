"""Heatmap rendering, NLA and MLA."""

import math

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf.data import heatmaps


def _render(points, visible, size=64, radius=0.1):
  return heatmaps.render(tf.constant([points], tf.float32),
                         tf.constant([visible], tf.float32), size, size,
                         radius).numpy()[0]


@pytest.mark.parametrize('radius', [0.05, 0.1, 0.2])
def test_disk_area_and_flat_top(radius):
  size = 128
  maps = _render([[0.5, 0.5]], [1], size, radius)
  assert maps.shape == (size, size, 1)
  assert maps.min() >= 0 and maps.max() <= 1
  r = radius * size
  disk = math.pi * r * r
  # The half-height contour is the disk; the blur adds pi * sigma^2 of mass.
  assert abs((maps >= 0.5).sum() - disk) / disk < 0.05
  sigma = heatmaps.EDGE_SIGMA * r
  assert abs(maps.sum() - math.pi * (r * r + sigma * sigma)) / disk < 0.02
  ys, xs = np.mgrid[:size, :size] + 0.5
  distance = np.hypot(xs - 64, ys - 64)
  assert maps[distance < 0.5 * r, 0].min() > 0.97      # flat top
  assert maps[distance > 1.5 * r, 0].max() < 0.03      # dark outside
  edge = maps[np.abs(distance - r) < 0.5, 0]
  assert 0.3 < edge.mean() < 0.7                       # soft edge at r


def test_falloff_keeps_the_top_and_ramps_linearly_with_distance():
  size, radius, falloff = 100, 0.05, 0.4
  maps = heatmaps.render(tf.constant([[[0.3, 0.6], [0.5, 0.5]]]),
                         tf.constant([[1.0, 0.0]]), size, size, radius,
                         falloff).numpy()[0]
  ys, xs = np.mgrid[:size, :size] + 0.5
  distance = np.hypot(xs - 30, ys - 60)
  expected = np.clip(1 - (distance - radius * size) / (falloff * size), 0, 1)
  np.testing.assert_allclose(maps[..., 0], expected, atol=1e-5)
  assert maps[distance <= radius * size, 0].min() == 1.0    # flat top
  assert maps[distance >= (radius + falloff) * size, 0].max() == 0.0
  assert maps[..., 1].max() == 0                            # invisible


def test_invisible_landmark_gives_zero_channel_and_shapes():
  maps = heatmaps.render(tf.random.uniform([2, 5, 2]),
                         tf.constant([[1, 0, 1, 0, 1], [0] * 5], tf.float32),
                         24, 32).numpy()
  assert maps.shape == (2, 24, 32, 5)
  assert maps[0, :, :, 1].max() == 0 and maps[0, :, :, 3].max() == 0
  assert maps[1].max() == 0
  assert maps[0, :, :, 0].max() > 0.9


def test_centre_lands_on_the_landmark_pixel():
  maps = _render([[0.25, 0.75]], [1], 64, 0.05)
  ys, xs = np.mgrid[:64, :64] + 0.5
  w = maps[..., 0]
  centre = np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()
  np.testing.assert_allclose(centre, [16, 48], atol=0.05)


def test_same_values_eagerly_and_inside_tf_data():
  points = tf.random.stateless_uniform([4, 3, 2], [1, 2])
  visible = tf.constant([[1, 1, 0]] * 4, tf.float32)
  eager = heatmaps.render(points, visible, 16, 16).numpy()
  data = tf.data.Dataset.from_tensors((points, visible)).map(
      lambda p, v: heatmaps.render(p, v, 16, 16))
  np.testing.assert_allclose(next(iter(data)).numpy(), eager, atol=1e-6)


def test_nla_keeps_the_true_point_inside_the_blob():
  radius = 0.1
  points = tf.random.stateless_uniform([256, 3, 2], [0, 1], 0.3, 0.7)
  shifted = heatmaps.noisy_landmarks(points, radius, 1.0, tf.constant([3, 4]))
  offsets = np.linalg.norm((shifted - points).numpy(), axis=-1)
  assert offsets.max() <= radius + 1e-6
  assert offsets.mean() > 0.5 * radius  # uniform over the disk: mean 2r/3
  # The blob around the shifted centre covers the true landmark.
  maps = heatmaps.render(shifted[:8], tf.ones([8, 3]), 64, 64, radius).numpy()
  for b in range(8):
    for k in range(3):
      x, y = (points[b, k].numpy() * 64).astype(int)
      assert maps[b, y, x, k] > 0.3  # half height at the edge, less a pixel
  unchanged = heatmaps.noisy_landmarks(points, radius, 0.0, tf.constant([3, 4]))
  np.testing.assert_allclose(unchanged, points)


@pytest.mark.parametrize('num_landmarks,min_visible', [(3, 2), (5, 3), (5, 1)])
def test_mla_never_leaves_fewer_than_m(num_landmarks, min_visible):
  rng = np.random.default_rng(0)
  visible = (rng.random((2000, num_landmarks)) < 0.8).astype(np.float32)
  hidden = heatmaps.missing_landmarks(tf.constant(visible), min_visible, 0.9,
                                      tf.constant([5, 6])).numpy()
  assert np.all(hidden <= visible)   # only hides
  before, after = visible.sum(1), hidden.sum(1)
  assert np.all(after >= np.minimum(before, min_visible))
  # At most M visible to start with: nothing is hidden.
  few = before <= min_visible
  np.testing.assert_array_equal(hidden[few], visible[few])


def test_mla_hides_at_rate_p():
  visible = tf.ones([20000, 10])
  hidden = heatmaps.missing_landmarks(visible, 1, 0.3,
                                      tf.constant([7, 8])).numpy()
  # With 10 visible and M = 1 the cap (hide at most 9) almost never binds.
  assert abs((1 - hidden.mean()) - 0.3) < 0.01
  deterministic = heatmaps.missing_landmarks(visible, 1, 0.3,
                                             tf.constant([7, 8])).numpy()
  np.testing.assert_array_equal(hidden, deterministic)

"""Landmark heatmaps and the paper's heatmap augmentations (§3.3, §4.2).

A heatmap is one channel per landmark: a white disk of radius r (a fraction of
the image size) smoothed by a Gaussian, so its edge is soft and its top flat --
the model gets no hint *where* inside the blob the landmark is, which is what
lets a blob of radius r stand for an uncertainty of r. An invisible landmark
gives an all-zero channel.

Coordinates are normalised and continuous (see records.py): (0, 0) is the
image's top-left corner, (1, 1) its bottom-right corner.
"""

import math

import tensorflow as tf

# Gaussian sigma of the soft edge, as a fraction of the disk radius. Small
# enough that the top stays flat over the inner half of the disk.
EDGE_SIGMA = 0.25


def render(landmarks: tf.Tensor, visible: tf.Tensor, height: int, width: int,
           radius: float = 0.05, falloff: float = 0.0) -> tf.Tensor:
  """Renders heatmaps.

  With `falloff` 0 (the paper's heatmap), a disk blurred by a Gaussian: across
  its edge that is the error function of the distance to the edge, and the
  closed form renders any size exactly and vectorised, without convolutions.

  With `falloff` > 0, the flat top of radius r is kept and the value then
  falls linearly to 0 over a further `falloff`. Every pixel within reach then
  knows how far it is from each landmark, so even the first convolution can
  tell where a mark sits relative to the body; with the paper's small disks
  only marks right next to a landmark can (docs/RESULTS.md, docs/journal/: a network
  trained from scratch does not learn that relation from small disks).

  Args:
    landmarks: [B, K, 2] float, normalised (x, y).
    visible: [B, K] float or bool, 1 where the landmark is visible.
    height, width: output size in pixels.
    radius: disk radius as a fraction of max(height, width).
    falloff: width of the linear ramp beyond the disk, same unit.

  Returns:
    [B, height, width, K] float32 in [0, 1].
  """
  landmarks = tf.cast(landmarks, tf.float32)
  visible = tf.cast(visible, tf.float32)
  size = float(max(height, width))
  radius_px = radius * size
  sigma = max(EDGE_SIGMA * radius_px, 1e-3)
  ys = (tf.range(height, dtype=tf.float32) + 0.5)[None, :, None, None]
  xs = (tf.range(width, dtype=tf.float32) + 0.5)[None, None, :, None]
  cx = (landmarks[:, :, 0] * width)[:, None, None, :]
  cy = (landmarks[:, :, 1] * height)[:, None, None, :]
  distance = tf.sqrt(tf.square(xs - cx) + tf.square(ys - cy))
  if falloff > 0:
    maps = tf.clip_by_value(1.0 - (distance - radius_px) / (falloff * size),
                            0.0, 1.0)
  else:
    maps = 0.5 * tf.math.erfc((distance - radius_px) / (sigma * math.sqrt(2.0)))
  return maps * visible[:, None, None, :]


def noisy_landmarks(landmarks: tf.Tensor, radius: float, strength: float,
                    seed: tf.Tensor) -> tf.Tensor:
  """NLA: moves each blob centre by a random offset of length <= r.

  The offset is uniform over the disk of radius `strength * radius`, so with
  strength <= 1 the true landmark always stays inside the blob.

  Args:
    landmarks: [B, K, 2] normalised (x, y).
    radius: blob radius as a fraction of the image size.
    strength: fraction of the radius the centre may move (0 disables).
    seed: [2] int seed for the stateless random ops.

  Returns:
    [B, K, 2] shifted centres.
  """
  shape = tf.shape(landmarks)[:2]
  seeds = tf.random.experimental.stateless_split(seed, 2)
  angle = tf.random.stateless_uniform(shape, seeds[0], 0.0, 2 * math.pi)
  # sqrt of a uniform radius makes the points uniform over the disk's area.
  rho = strength * radius * tf.sqrt(tf.random.stateless_uniform(shape, seeds[1]))
  offset = tf.stack([rho * tf.cos(angle), rho * tf.sin(angle)], axis=-1)
  return landmarks + offset


def missing_landmarks(visible: tf.Tensor, min_visible: int, probability: float,
                      seed: tf.Tensor) -> tf.Tensor:
  """MLA: hides visible landmarks at random, never below `min_visible`.

  When more than M = `min_visible` landmarks are visible, each visible one is
  hidden with `probability`; if that would leave fewer than M, a random subset
  of the candidates is kept hidden so that exactly M remain.

  Args:
    visible: [B, K] float 0/1.
    seed: [2] int seed.

  Returns:
    [B, K] float 0/1, a subset of `visible`.
  """
  visible = tf.cast(visible, tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  shape = tf.shape(visible)
  candidate = (visible > 0) & (
      tf.random.stateless_uniform(shape, seeds[0]) < probability)
  allowed = tf.maximum(tf.reduce_sum(visible, axis=1) - min_visible, 0.0)
  # Rank candidates in a random order; only the first `allowed` are hidden.
  keys = tf.where(candidate, tf.random.stateless_uniform(shape, seeds[1]), 2.0)
  rank = tf.argsort(tf.argsort(keys, axis=1), axis=1)
  hide = candidate & (tf.cast(rank, tf.float32) < allowed[:, None])
  return visible * (1.0 - tf.cast(hide, tf.float32))


def displaced_landmarks(landmarks: tf.Tensor, distance: float,
                        seed: tf.Tensor) -> tf.Tensor:
  """The paper's noisy-landmark protocol (Table 3): every landmark moved
  uniformly within a disk of radius `distance` (fraction of the image size).

  Args:
    landmarks: [B, K, 2] normalised; seed: [2] int.
  """
  return noisy_landmarks(landmarks, distance, 1.0, seed)


def hidden_landmarks(visible: tf.Tensor, count: int,
                     seed: tf.Tensor) -> tf.Tensor:
  """The paper's missing-landmark protocol: `count` of each image's visible
  landmarks hidden at random (all of them if fewer are visible).

  Args:
    visible: [B, K] 0/1; seed: [2] int.

  Returns:
    [B, K] float 0/1.
  """
  visible = tf.cast(visible, tf.float32)
  keys = tf.where(visible > 0, tf.random.stateless_uniform(
      tf.shape(visible), seed), 2.0)
  rank = tf.argsort(tf.argsort(keys, axis=1), axis=1)
  return visible * tf.cast(rank >= count, tf.float32)

"""Thin-plate-spline warps of whole batches, with landmarks that may be hidden.

A thin-plate spline (Bookstein, 1989) is the smoothest map that takes each
control point exactly onto its target: an affine part plus radial bends
U(r) = r^2 log r^2 around each control point. Here the control points are
the alignment template's landmarks and the targets are each image's
landmarks, so the spline is the *backward* map of the warp: for every pixel
of the aligned image it says where to sample the input. Its linear system
depends only on the template and on which landmarks are visible, so it is
well posed whenever three visible template points are not on a line, however
noisy the image's landmarks.

A hidden landmark keeps its row and column in the system but is decoupled
from the rest (a 1 on the diagonal, its weight forced to 0), so every image
of a batch solves a system of the same shape in one batched call.

Coordinates: pixel centres, as augment.py's matrices use, divided by the
image's longer side to keep the system well conditioned.
"""

import tensorflow as tf


def _kernel(squared_distance: tf.Tensor) -> tf.Tensor:
  """U = r^2 log r^2, 0 at r = 0."""
  safe = tf.maximum(squared_distance, 1e-12)
  return tf.where(squared_distance > 1e-12, squared_distance * tf.math.log(
      safe), 0.0)


def _squared_distances(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """[..., N, 2], [..., M, 2] -> [..., N, M]."""
  return tf.reduce_sum(tf.square(a[..., :, None, :] - b[..., None, :, :]), -1)


def _basis(points: tf.Tensor, controls: tf.Tensor) -> tf.Tensor:
  """[B, N, 2] points, [B, K, 2] controls -> [B, N, K + 3]: the kernel to
  each control point, then 1, x, y."""
  ones = tf.ones_like(points[..., :1])
  return tf.concat([_kernel(_squared_distances(points, controls)), ones,
                    points], -1)


def fit(controls: tf.Tensor, targets: tf.Tensor, visible: tf.Tensor
        ) -> tf.Tensor:
  """Spline coefficients through the visible control points.

  Args:
    controls: [B, K, 2] (or [K, 2], shared); targets: [B, K, 2];
    visible: [B, K] 0/1.

  Returns:
    [B, K + 3, 2] coefficients for `evaluate`: kernel weights (0 for a hidden
    point), then the affine part.
  """
  targets = tf.cast(targets, tf.float32)
  m = tf.cast(visible, tf.float32)
  controls = tf.broadcast_to(tf.cast(controls, tf.float32), tf.shape(targets))
  pair = m[:, :, None] * m[:, None, :]
  kernel = (_kernel(_squared_distances(controls, controls)) * pair
            + tf.linalg.diag(1.0 - m))
  affine = tf.concat([tf.ones_like(controls[..., :1]), controls], -1) * m[
      ..., None]                                                   # [B, K, 3]
  top = tf.concat([kernel, affine], 2)
  bottom = tf.concat([tf.linalg.matrix_transpose(affine),
                      tf.zeros_like(affine[:, :3, :3])], 2)
  system = tf.concat([top, bottom], 1)                          # [B, K+3, K+3]
  rhs = tf.concat([targets * m[..., None], tf.zeros_like(targets[:, :3])], 1)
  return tf.linalg.solve(system, rhs)


def evaluate(points: tf.Tensor, controls: tf.Tensor,
             coefficients: tf.Tensor) -> tf.Tensor:
  """The spline at [B, N, 2] points -> [B, N, 2]."""
  controls = tf.broadcast_to(tf.cast(controls, tf.float32),
                             tf.concat([tf.shape(points)[:1],
                                        tf.shape(controls)[-2:]], 0))
  return tf.linalg.matmul(_basis(points, controls), coefficients)


def pixel_grid(height: int, width: int) -> tf.Tensor:
  """[H * W, 2] pixel-centre (x, y) of every pixel, row by row."""
  ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32),
                       tf.range(width, dtype=tf.float32), indexing='ij')
  return tf.reshape(tf.stack([xs, ys], -1), [-1, 2])


def sample(images: tf.Tensor, coordinates: tf.Tensor) -> tf.Tensor:
  """Bilinear sampling of [B, H, W, C] images at [B, H', W', 2] pixel-centre
  (x, y); neighbours outside the image count as the image's mean (as
  augment.warp_images fills), so the fill adds no edges."""
  batch = tf.shape(images)[0]
  height, width, channels = images.shape[1], images.shape[2], images.shape[3]
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  flat = tf.reshape(images - mean, [batch, height * width, channels])
  x, y = coordinates[..., 0], coordinates[..., 1]
  x0, y0 = tf.floor(x), tf.floor(y)
  out = 0.0
  for dx in (0.0, 1.0):
    for dy in (0.0, 1.0):
      xi, yi = x0 + dx, y0 + dy
      weight = (1.0 - tf.abs(x - xi)) * (1.0 - tf.abs(y - yi))
      inside = ((xi >= 0) & (xi <= width - 1) & (yi >= 0)
                & (yi <= height - 1))
      index = (tf.cast(tf.clip_by_value(yi, 0, height - 1), tf.int32) * width
               + tf.cast(tf.clip_by_value(xi, 0, width - 1), tf.int32))
      shape = tf.shape(index)
      values = tf.gather(flat, tf.reshape(index, [batch, -1]), batch_dims=1)
      values = tf.reshape(values, tf.concat([shape, [channels]], 0))
      out += values * (weight * tf.cast(inside, tf.float32))[..., None]
  return out + mean

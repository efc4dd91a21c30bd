"""Joint geometric augmentation of images and landmarks, on whole batches.

One 3x3 matrix is drawn per sample and applied to both the image (by
`ImageProjectiveTransformV3`) and its landmark coordinates, so a landmark
always stays on the same image content; heatmaps are rendered afterwards from
the moved coordinates, which is exact and cheaper than warping heatmaps.
The baseline model gets the identical image augmentation.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Built by config.augment_config (defaults there)."""
  max_rotation: float            # degrees; angle uniform in [0, max)
  max_zoom: float                # scale uniform in [1 - z, 1 + z]
  max_translation: float         # fraction of the size, per axis
  brightness: float              # additive, uniform in [-b, b] ([0,1] images)
  contrast: float                # factor uniform in [1 - c, 1 + c]
  erase: float                   # max fraction of the area erased (0: off)
  lighting: float                # max darkening of a light gradient (0: off)


def _translation(tx, ty):
  one, zero = tf.ones_like(tx), tf.zeros_like(tx)
  return tf.stack([tf.stack([one, zero, tx], -1),
                   tf.stack([zero, one, ty], -1),
                   tf.stack([zero, zero, one], -1)], axis=-2)


def _rotation_scale(angle, scale):
  zero, one = tf.zeros_like(angle), tf.ones_like(angle)
  c, s = tf.cos(angle) * scale, tf.sin(angle) * scale
  return tf.stack([tf.stack([c, -s, zero], -1),
                   tf.stack([s, c, zero], -1),
                   tf.stack([zero, zero, one], -1)], axis=-2)


def affine_matrices(angle, scale, shift_x, shift_y, height, width):
  """Forward matrices in pixel-centre coordinates, about the image centre.

  Args:
    angle: [B] radians; scale: [B]; shift_x, shift_y: [B] pixels.

  Returns:
    [B, 3, 3] float32 mapping input pixel (x, y, 1) to output pixel.
  """
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  ones = tf.ones_like(angle)
  return (_translation(cx + shift_x, cy + shift_y)
          @ _rotation_scale(angle, scale)
          @ _translation(-cx * ones, -cy * ones))


def random_matrices(batch_size, height, width, cfg: AugmentConfig, seed):
  """[B, 3, 3] random forward matrices; `seed` is a [2] int tensor."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  shape = [batch_size]
  angle = tf.random.stateless_uniform(shape, seeds[0], 0.0,
                                      math.radians(cfg.max_rotation))
  scale = tf.random.stateless_uniform(shape, seeds[1], 1.0 - cfg.max_zoom,
                                      1.0 + cfg.max_zoom)
  tx = tf.random.stateless_uniform(shape, seeds[2], -cfg.max_translation,
                                   cfg.max_translation) * width
  ty = tf.random.stateless_uniform(shape, seeds[3], -cfg.max_translation,
                                   cfg.max_translation) * height
  return affine_matrices(angle, scale, tx, ty, height, width)


def warp_images(images: tf.Tensor, forward: tf.Tensor) -> tf.Tensor:
  """Warps [B, H, W, C] float images by forward matrices [B, 3, 3].

  Pixels that come from outside the image take the image's mean, so the fill
  adds no edges or copies of the pattern for the network to latch onto.
  """
  inverse = tf.linalg.inv(forward)
  inverse = inverse / inverse[:, 2:3, 2:3]
  transforms = tf.reshape(inverse, [-1, 9])[:, :8]
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  warped = tf.raw_ops.ImageProjectiveTransformV3(
      images=images - mean, transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')
  return warped + mean


def transform_landmarks(landmarks, visible, forward, height, width):
  """Moves normalised landmarks [B, K, 2] with the images' forward matrices.

  Returns:
    (landmarks [B, K, 2], visible [B, K]): a landmark that leaves the frame
    becomes invisible.
  """
  size = tf.constant([width, height], tf.float32)
  pixel = landmarks * size - 0.5                      # to pixel centres
  homogeneous = tf.concat([pixel, tf.ones_like(pixel[..., :1])], axis=-1)
  moved = tf.einsum('bij,bkj->bki', forward, homogeneous)
  moved = (moved[..., :2] / moved[..., 2:3] + 0.5) / size
  inside = tf.reduce_all((moved >= 0.0) & (moved <= 1.0), axis=-1)
  visible = tf.cast(visible, tf.float32) * tf.cast(inside, tf.float32)
  return tf.where(visible[..., None] > 0, moved, 0.0), visible


def photometric(images: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
  """Per-sample brightness / contrast jitter on [B, H, W, C] images in [0, 1]."""
  if not cfg.brightness and not cfg.contrast:
    return images
  seeds = tf.random.experimental.stateless_split(seed, 2)
  shape = [tf.shape(images)[0], 1, 1, 1]
  delta = tf.random.stateless_uniform(shape, seeds[0], -cfg.brightness,
                                      cfg.brightness)
  factor = tf.random.stateless_uniform(shape, seeds[1], 1.0 - cfg.contrast,
                                       1.0 + cfg.contrast)
  mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
  return tf.clip_by_value((images - mean) * factor + mean + delta, 0.0, 1.0)


def lighting_gradient(images: tf.Tensor, strength: float, seed) -> tf.Tensor:
  """Uneven light: each image times a linear ramp that falls from 1 to
  1 - a along a random direction, a uniform in [0, strength]."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
  angle = tf.random.stateless_uniform([batch], seeds[0], 0.0, 2 * math.pi)
  amount = tf.random.stateless_uniform([batch], seeds[1], 0.0, strength)
  ys, xs = tf.meshgrid(tf.linspace(-0.5, 0.5, height),
                       tf.linspace(-0.5, 0.5, width), indexing='ij')
  # Projection on the direction, in [-1/sqrt(2), 1/sqrt(2)] -> ramp in [0, 1].
  along = (xs[None] * tf.cos(angle)[:, None, None]
           + ys[None] * tf.sin(angle)[:, None, None]) * math.sqrt(2) + 0.5
  factor = 1.0 - amount[:, None, None] * tf.clip_by_value(along, 0.0, 1.0)
  return images * factor[..., None]


def erase_rectangles(images: tf.Tensor, max_area: float, seed,
                     probability: float = 0.5) -> tf.Tensor:
  """Random erasing: with `probability`, a rectangle of 2 % to `max_area`
  of the image (aspect ratio 0.3 to 3.3) is filled with uniform noise,
  as leaves, grass or another animal hide part of a real body.

  Returns images of the same shape; a sample keeps its pixels elsewhere."""
  seeds = tf.random.experimental.stateless_split(seed, 6)
  batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
  shape = [batch]
  area = tf.random.stateless_uniform(shape, seeds[0], 0.02, max(max_area,
                                                                0.02))
  log_ratio = tf.random.stateless_uniform(shape, seeds[1], math.log(0.3),
                                          math.log(1 / 0.3))
  half_w = tf.sqrt(area * tf.exp(log_ratio)) / 2     # fractions of the side
  half_h = tf.sqrt(area / tf.exp(log_ratio)) / 2
  cx = tf.random.stateless_uniform(shape, seeds[2])
  cy = tf.random.stateless_uniform(shape, seeds[3])
  on = tf.random.stateless_uniform(shape, seeds[4]) < probability
  ys, xs = tf.meshgrid((tf.range(height, dtype=tf.float32) + 0.5) / height,
                       (tf.range(width, dtype=tf.float32) + 0.5) / width,
                       indexing='ij')
  inside = ((tf.abs(xs[None] - cx[:, None, None]) < half_w[:, None, None])
            & (tf.abs(ys[None] - cy[:, None, None]) < half_h[:, None, None])
            & on[:, None, None])
  noise = tf.random.stateless_uniform(tf.shape(images), seeds[5])
  return tf.where(inside[..., None], noise, images)


def augment_batch(images, landmarks, visible, cfg: AugmentConfig, seed):
  """Applies one random geometry per sample to images and landmarks.

  Args:
    images: [B, H, W, C] float32 in [0, 1].
    landmarks: [B, K, 2] normalised; visible: [B, K].
    seed: [2] int tensor.

  Returns:
    (images, landmarks, visible) with the same shapes.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  height, width = images.shape[1], images.shape[2]
  forward = random_matrices(tf.shape(images)[0], height, width, cfg, seeds[0])
  images = warp_images(images, forward)
  landmarks, visible = transform_landmarks(landmarks, visible, forward,
                                           height, width)
  images = photometric(images, cfg, seeds[1])
  # Light and occluders come last, in the photo's frame, as they do in the
  # field; the landmarks stay visible under an occluder (one clicks a fin
  # one can infer). Their seeds fold in new constants so that turning them
  # on leaves the geometry and photometry above unchanged.
  if cfg.lighting:
    images = lighting_gradient(images, cfg.lighting,
                               tf.random.experimental.stateless_fold_in(
                                   seeds[1], 1))
  if cfg.erase:
    images = erase_rectangles(images, cfg.erase,
                              tf.random.experimental.stateless_fold_in(
                                  seeds[1], 2))
  return images, landmarks, visible

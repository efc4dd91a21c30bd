"""Landmark alignment: warp every image so that its landmarks sit on a template.

The landmarks fix the body's frame. With 3 or more visible landmarks an
affine transform, with 2 a similarity transform, maps them (least squares)
onto the template, the Procrustes mean shape of the training split; the image
is warped by it and its landmarks move with it, so heatmaps are rendered in
the aligned frame. With fewer than 2 visible landmarks nothing fixes the
frame: the image stays as it is and the heatmaps carry what is known.

`align` is called by preprocess.model_inputs, the one preprocessing path, so
training (after augmentation, NLA and MLA: the network learns what a noisy or
partial alignment looks like), evaluation, the exported serving graph and
identification all align the same way.

Coordinates are normalised as in records.py; transforms act on pixel
centres, as augment.py's do.
"""

import numpy as np
import tensorflow as tf

from lmid_tf.data import augment
from lmid_tf.data import records

# Below this many visible landmarks a transform of that kind is not fitted.
MIN_AFFINE = 3
MIN_SIMILARITY = 2


def procrustes_template(landmarks: np.ndarray, visible: np.ndarray,
                        iterations: int = 10) -> np.ndarray:
  """Generalised Procrustes mean shape of fully visible shapes.

  Args:
    landmarks: [N, K, 2] normalised (x, y); visible: [N, K].

  Returns:
    [K, 2] normalised template: centred on the image centre, at the median
    size of the shapes (so the aligned body fills the frame as it usually
    does), in the orientation of the mean.
  """
  landmarks = np.asarray(landmarks, np.float64)
  complete = np.asarray(visible).astype(bool).all(axis=1)
  shapes = landmarks[complete]
  k = landmarks.shape[1]
  if len(shapes) < 2 or k < 2:
    raise ValueError(f'a template needs at least 2 images with all {k} '
                     f'landmarks visible; the train split has {len(shapes)}')
  centred = shapes - shapes.mean(axis=1, keepdims=True)
  sizes = np.sqrt((centred ** 2).sum(axis=(1, 2)))
  unit = centred / sizes[:, None, None]
  mean = unit[0]
  for _ in range(iterations):
    # Rotate every shape onto the current mean (orthogonal Procrustes).
    rotated = []
    for shape in unit:
      u, _, vt = np.linalg.svd(shape.T @ mean)
      rotation = u @ vt
      if np.linalg.det(rotation) < 0:      # no reflections
        u[:, -1] *= -1
        rotation = u @ vt
      rotated.append(shape @ rotation)
    new_mean = np.mean(rotated, axis=0)
    new_mean /= np.sqrt((new_mean ** 2).sum())
    if np.allclose(new_mean, mean, atol=1e-9):
      break
    mean = new_mean
  return mean * np.median(sizes) + 0.5


def template_from_data(data_dir: str) -> tuple:
  """The Procrustes template of a dataset's train split, as a nested tuple
  (it is saved in preprocess.json with the model)."""
  metadata, serialized = records.read_split(data_dir, 'train')
  parsed = tf.data.Dataset.from_tensor_slices(serialized).batch(4096).map(
          lambda s: records.parse(s, metadata.num_landmarks))
  landmarks, visible = [], []
  for batch in parsed:
    landmarks.append(batch['landmarks'].numpy())
    visible.append(batch['visible'].numpy())
  template = procrustes_template(np.concatenate(landmarks),
                                 np.concatenate(visible))
  return tuple((round(float(x), 6), round(float(y), 6)) for x, y in template)


def _pixels(points, size):
  return points * size - 0.5


def fit_transforms(landmarks: tf.Tensor, visible: tf.Tensor,
                   template: tf.Tensor, height: int, width: int,
                   kind: str = 'affine') -> tf.Tensor:
  """Forward matrices taking each image's landmarks onto the template.

  kind 'similarity' never fits shear: with 3 landmarks the least-squares
  similarity leaves each image's residual shape (perspective, a bent body,
  landmark noise) in the aligned landmarks, so heatmaps rendered there tell
  the network what the alignment could not fix; an exact affine fit would
  put every heatmap on the template and leave them nothing to say.

  Args:
    landmarks: [B, K, 2] normalised; visible: [B, K] 0/1.
    template: [K, 2] normalised.

  Returns:
    [B, 3, 3] float32 mapping input pixel (x, y, 1) to aligned pixel:
    weighted least-squares affine with >= 3 visible landmarks, similarity
    (rotation, uniform scale, shift) with 2, identity with fewer.
  """
  size = tf.constant([width, height], tf.float32)
  source = _pixels(tf.cast(landmarks, tf.float32), size)           # [B, K, 2]
  target = _pixels(tf.cast(template, tf.float32), size)[None]      # [1, K, 2]
  target = tf.broadcast_to(target, tf.shape(source))
  w = tf.cast(visible, tf.float32)                                 # [B, K]
  count = tf.reduce_sum(w, axis=1)                                 # [B]
  total = tf.maximum(count, 1.0)[:, None, None]
  # Weighted centroids make both fits translation-free.
  source_mean = tf.reduce_sum(source * w[..., None], 1, keepdims=True) / total
  target_mean = tf.reduce_sum(target * w[..., None], 1, keepdims=True) / total
  p = (source - source_mean) * w[..., None]
  q = (target - target_mean) * w[..., None]

  # Similarity: q ~ [[a, -b], [b, a]] p.
  norm = tf.maximum(tf.reduce_sum(p * p, axis=[1, 2]), 1e-9)
  a = tf.reduce_sum(p * q, axis=[1, 2]) / norm
  b = tf.reduce_sum(p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0], 1) / norm
  similarity = tf.stack([tf.stack([a, -b], -1), tf.stack([b, a], -1)], -2)

  # Affine: q ~ M p, M = (q^T p)(p^T p)^-1, with the 2x2 inverse written
  # out. Landmarks (nearly) on a line fix no shear: they get the similarity.
  ptp = tf.einsum('bki,bkj->bij', p, p)
  qtp = tf.einsum('bki,bkj->bij', q, p)
  det = ptp[:, 0, 0] * ptp[:, 1, 1] - ptp[:, 0, 1] * ptp[:, 1, 0]
  trace = ptp[:, 0, 0] + ptp[:, 1, 1]
  well_posed = det > 1e-3 * tf.square(trace)
  safe_det = tf.where(well_posed, det, 1.0)
  inverse = tf.stack([tf.stack([ptp[:, 1, 1], -ptp[:, 0, 1]], -1),
                      tf.stack([-ptp[:, 1, 0], ptp[:, 0, 0]], -1)],
                     -2) / safe_det[:, None, None]
  affine = tf.linalg.matmul(qtp, inverse)

  if kind not in ('affine', 'similarity'):
    raise ValueError(f'alignment kind {kind!r}: affine or similarity')
  use_affine = (count >= MIN_AFFINE) & well_posed & (kind == 'affine')
  # Landmarks all on one spot (a bad click, a request's placeholder) fix no
  # rotation or scale: leave that image unaligned rather than collapse it.
  use_similarity = (count >= MIN_SIMILARITY) & (
      tf.reduce_sum(p * p, axis=[1, 2]) > 1.0)
  linear = tf.where(use_affine[:, None, None], affine,
                    tf.where(use_similarity[:, None, None],
                             similarity, tf.eye(2, batch_shape=[1])))
  shift = target_mean[:, 0] - tf.einsum('bij,bj->bi', linear,
                                         source_mean[:, 0])
  shift = tf.where((use_affine | use_similarity)[:, None], shift, 0.0)
  top = tf.concat([linear, shift[..., None]], axis=2)               # [B, 2, 3]
  bottom = tf.broadcast_to(tf.constant([[[0.0, 0.0, 1.0]]]),
                           [tf.shape(top)[0], 1, 3])
  return tf.concat([top, bottom], axis=1)


def align(images: tf.Tensor, landmarks: tf.Tensor, visible: tf.Tensor,
          template, kind: str = 'affine') -> tuple:
  """Warps images so that their landmarks sit on the template.

  Args:
    images: [B, H, W, C] float; landmarks: [B, K, 2] normalised;
    visible: [B, K]; template: [K, 2] normalised (array or nested tuple).

  Returns:
    (images, landmarks, visible) in the aligned frame; a landmark that the
    warp takes out of the frame becomes invisible.
  """
  height, width = images.shape[1], images.shape[2]
  template = tf.constant(np.asarray(template, np.float32))
  if template.shape[0] != landmarks.shape[1]:
    raise ValueError(f'the alignment template has {template.shape[0]} '
                     f'landmarks, the data {landmarks.shape[1]}')
  forward = fit_transforms(landmarks, visible, template, height, width,
                           kind)
  images = augment.warp_images(images, forward)
  landmarks, visible = augment.transform_landmarks(landmarks, visible,
                                                   forward, height, width)
  return images, landmarks, visible

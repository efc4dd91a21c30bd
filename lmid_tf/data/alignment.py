"""Landmark alignment: warp every image so that its landmarks sit on a template.

The landmarks fix the body's frame. With 3 or more visible landmarks an
affine transform, with 2 a similarity transform, maps them (least squares)
onto the template, the Procrustes mean shape of the training split; the image
is warped by it and its landmarks move with it, so heatmaps are rendered in
the aligned frame. With fewer than 2 visible landmarks nothing fixes the
frame: the image stays as it is and the heatmaps carry what is known.

Kind 'tps' undoes a bend as well: with 4 or more visible landmarks a
thin-plate spline (thin_plate_spline.py) takes each of them exactly onto
the template and bends the image smoothly in between, as a body bends
between its eyes, gills and tail; with fewer it falls back to the affine
(3) or similarity (2) fit above.

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
from lmid_tf.data import thin_plate_spline

# Below this many visible landmarks a transform of that kind is not fitted.
MIN_SPLINE = 4
MIN_AFFINE = 3
MIN_SIMILARITY = 2
KINDS = ('affine', 'similarity', 'tps')


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
  return _fit(landmarks, visible, template, height, width, kind)[0]


def _fit(landmarks, visible, template, height, width, kind):
  """fit_transforms' matrices, and [B] bool: which are the affine fit."""
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
    raise ValueError(f'alignment kind {kind!r}: affine or similarity '
                     '(or tps, for align)')
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
  return tf.concat([top, bottom], axis=1), use_affine


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
  if kind not in KINDS:
    raise ValueError(f'alignment kind {kind!r}: one of {", ".join(KINDS)}')
  spline = kind == 'tps' and landmarks.shape[1] >= MIN_SPLINE
  forward, affine = _fit(landmarks, visible, template, height, width,
                         'affine' if kind == 'tps' else kind)
  moved, shown = augment.transform_landmarks(landmarks, visible, forward,
                                             height, width)
  if not spline:
    return augment.warp_images(images, forward), moved, shown
  return _spline_align(images, landmarks, visible, template, forward,
                       affine, moved, shown)


def _spline_align(images, landmarks, visible, template, forward, affine,
                  moved, shown):
  """align's kind 'tps': the spline where >= MIN_SPLINE landmarks are
  visible (and their affine fit is well posed: not on one spot or line),
  the affine / similarity / identity `forward` elsewhere."""
  height, width = images.shape[1], images.shape[2]
  size = tf.constant([width, height], tf.float32)
  scale = float(max(height, width))
  visible = tf.cast(visible, tf.float32)
  use_spline = (tf.reduce_sum(visible, 1) >= MIN_SPLINE) & affine
  # Images that take the fallback solve with every landmark, so that no
  # system of the batch is singular; their spline is not used.
  mask = tf.where(use_spline[:, None], visible, 1.0)
  controls = (template * size - 0.5) / scale
  targets = (tf.cast(landmarks, tf.float32) * size - 0.5) / scale
  coefficients = thin_plate_spline.fit(controls, targets, mask)
  pixels = thin_plate_spline.pixel_grid(height, width)
  batch = tf.shape(images)[0]
  grid = tf.broadcast_to(pixels[None], [batch, height * width, 2])
  bent = thin_plate_spline.evaluate(grid / scale, controls,
                                    coefficients) * scale
  inverse = tf.linalg.inv(forward)
  homogeneous = tf.concat([grid, tf.ones_like(grid[..., :1])], -1)
  back = tf.einsum('bij,bnj->bni', inverse, homogeneous)
  back = back[..., :2] / back[..., 2:]
  source = tf.where(use_spline[:, None, None], bent, back)
  images = thin_plate_spline.sample(
      images, tf.reshape(source, [batch, height, width, 2]))
  # The spline takes each visible landmark exactly onto the template.
  on_template = tf.broadcast_to(template[None], tf.shape(moved)) * visible[
      ..., None]
  landmarks = tf.where(use_spline[:, None, None], on_template, moved)
  visible = tf.where(use_spline[:, None], visible, shown)
  return images, landmarks, visible

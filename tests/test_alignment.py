"""Landmark alignment against numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf.data import alignment

SIZE = 64
TEMPLATE = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.75]], np.float32)


def _pixels(points):
  return points * SIZE - 0.5


def _apply(matrix, points_px):
  homogeneous = np.concatenate([points_px, np.ones((len(points_px), 1))], 1)
  moved = homogeneous @ matrix.T
  return moved[:, :2] / moved[:, 2:]


def _normalised(points_px):
  return (points_px + 0.5) / SIZE


def test_a_known_affine_transform_is_recovered():
  forward = np.eye(3)
  forward[:2] = [[1.1, 0.3, -6.0], [-0.2, 0.8, 4.0]]
  # Landmarks that the transform takes exactly onto the template.
  source = _apply(np.linalg.inv(forward), _pixels(TEMPLATE))
  fitted = alignment.fit_transforms(
      _normalised(source)[None].astype(np.float32), np.ones((1, 3)),
      TEMPLATE, SIZE, SIZE).numpy()[0]
  np.testing.assert_allclose(fitted, forward, atol=1e-3)
  landed = _apply(fitted, source)
  assert np.abs(landed - _pixels(TEMPLATE)).max() < 0.5


def test_least_squares_affine_with_four_landmarks_matches_numpy():
  rng = np.random.default_rng(1)
  template = rng.uniform(0.2, 0.8, (4, 2)).astype(np.float32)
  landmarks = rng.uniform(0.1, 0.9, (2, 4, 2)).astype(np.float32)
  fitted = alignment.fit_transforms(landmarks, np.ones((2, 4)), template,
                                    SIZE, SIZE).numpy()
  for b in range(2):
    design = np.concatenate([_pixels(landmarks[b]), np.ones((4, 1))], 1)
    solution, *_ = np.linalg.lstsq(design, _pixels(template), rcond=None)
    np.testing.assert_allclose(fitted[b, :2], solution.T, atol=2e-3)


def test_two_landmarks_give_a_similarity_onto_the_template():
  angle, scale = 0.7, 1.3
  rotation = scale * np.array([[np.cos(angle), -np.sin(angle)],
                               [np.sin(angle), np.cos(angle)]])
  forward = np.eye(3)
  forward[:2, :2], forward[:2, 2] = rotation, [5.0, -3.0]
  source = _apply(np.linalg.inv(forward), _pixels(TEMPLATE))
  source[2] = [0.0, 0.0]                     # the hidden one
  visible = np.array([[1.0, 1.0, 0.0]])
  fitted = alignment.fit_transforms(
      _normalised(source)[None].astype(np.float32), visible, TEMPLATE, SIZE,
      SIZE).numpy()[0]
  np.testing.assert_allclose(fitted, forward, atol=1e-3)
  landed = _apply(fitted, source[:2])
  assert np.abs(landed - _pixels(TEMPLATE[:2])).max() < 0.5


@pytest.mark.parametrize('visible', [[1, 0, 0], [0, 0, 0]])
def test_fewer_than_two_landmarks_leave_the_image_unaligned(visible):
  images = tf.random.stateless_uniform([1, SIZE, SIZE, 1], [0, 1])
  landmarks = tf.constant([[[0.2, 0.3], [0.6, 0.6], [0.4, 0.9]]])
  visible = tf.constant([visible], tf.float32)
  forward = alignment.fit_transforms(landmarks, visible, TEMPLATE, SIZE,
                                     SIZE).numpy()[0]
  np.testing.assert_allclose(forward, np.eye(3), atol=1e-6)
  aligned, moved, shown = alignment.align(images, landmarks, visible,
                                          TEMPLATE)
  np.testing.assert_allclose(aligned, images, atol=1e-5)
  np.testing.assert_allclose(moved * shown[..., None],
                             landmarks * visible[..., None], atol=1e-5)


def test_aligned_image_content_sits_on_the_template():
  """Dots drawn at the landmarks end up at the template after the warp."""
  angle = 2.0
  forward = np.eye(3)
  forward[:2, :2] = 0.9 * np.array([[np.cos(angle), -np.sin(angle)],
                                    [np.sin(angle), np.cos(angle)]])
  forward[:2, 2] = [60.0, 10.0]
  source = _apply(np.linalg.inv(forward), _pixels(TEMPLATE))
  image = np.zeros((SIZE, SIZE, 3), np.float32)
  for k, (x, y) in enumerate(np.round(source).astype(int)):
    image[y - 1:y + 2, x - 1:x + 2, k] = 1.0
  aligned, landmarks, visible = alignment.align(
      tf.constant(image[None]), tf.constant(_normalised(source)[None],
                                            tf.float32),
      tf.ones([1, 3]), TEMPLATE)
  np.testing.assert_allclose(landmarks.numpy()[0], TEMPLATE, atol=0.5 / SIZE)
  assert visible.numpy().tolist() == [[1, 1, 1]]
  for k, (x, y) in enumerate(_pixels(TEMPLATE)):
    channel = aligned.numpy()[0, :, :, k]
    peak_y, peak_x = np.unravel_index(np.argmax(channel), channel.shape)
    # The dots were rounded to whole pixels before warping.
    assert abs(peak_x - x) <= 1.5 and abs(peak_y - y) <= 1.5, k


def test_procrustes_template_of_moved_copies_is_the_shape():
  rng = np.random.default_rng(4)
  shape = np.array([[0.0, -1.0], [1.0, 0.5], [-1.0, 0.5]])
  copies, sizes = [], []
  for _ in range(20):
    angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3)
    rotation = np.array([[np.cos(angle), -np.sin(angle)],
                         [np.sin(angle), np.cos(angle)]])
    copies.append(shape @ rotation.T * scale + rng.uniform(0.3, 0.7, 2))
    sizes.append(scale)
  template = alignment.procrustes_template(np.array(copies),
                                           np.ones((20, 3)))
  centred = template - template.mean(0)
  # Same shape: the side lengths' ratios are the original's.
  sides = lambda p: np.linalg.norm(p - np.roll(p, 1, axis=0), axis=1)
  np.testing.assert_allclose(sides(centred) / sides(centred).sum(),
                             sides(shape) / sides(shape).sum(), atol=1e-6)
  np.testing.assert_allclose(template.mean(0), [0.5, 0.5], atol=1e-9)
  size = np.sqrt((centred ** 2).sum())
  assert size == pytest.approx(np.median(sizes) * np.sqrt((
      (shape - shape.mean(0)) ** 2).sum()))
  with pytest.raises(ValueError, match='at least 2 images'):
    alignment.procrustes_template(np.array(copies[:1]), np.ones((1, 3)))


def test_template_with_the_wrong_landmark_count_is_refused():
  with pytest.raises(ValueError, match='template has 3 landmarks, the data 4'):
    alignment.align(tf.zeros([1, 8, 8, 1]), tf.zeros([1, 4, 2]),
                    tf.ones([1, 4]), TEMPLATE)


def test_alignment_runs_inside_tf_data_as_it_does_eagerly():
  landmarks = tf.constant([[[0.2, 0.3], [0.6, 0.6], [0.4, 0.9]]])
  images = tf.random.stateless_uniform([1, SIZE, SIZE, 1], [0, 5])
  eager = alignment.align(images, landmarks, tf.ones([1, 3]), TEMPLATE)
  graph = next(iter(tf.data.Dataset.from_tensors(
      (images, landmarks)).map(lambda i, l: alignment.align(
          i, l, tf.ones([1, 3]), TEMPLATE))))
  for a, b in zip(eager, graph):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_similarity_alignment_keeps_the_residual_shape():
  """With 3 landmarks a similarity fit leaves shear in the landmarks (for the
  heatmaps to show); the affine fit removes it."""
  forward = np.eye(3)
  forward[:2] = [[1.0, 0.4, 0.0], [0.0, 1.0, 0.0]]          # a shear
  source = _normalised(_apply(np.linalg.inv(forward), _pixels(TEMPLATE)))
  args = (tf.constant(source[None], tf.float32), tf.ones([1, 3]), TEMPLATE)
  images = tf.zeros([1, SIZE, SIZE, 1])
  _, affine, _ = alignment.align(images, *args, kind='affine')
  _, similar, _ = alignment.align(images, *args, kind='similarity')
  np.testing.assert_allclose(affine.numpy()[0], TEMPLATE, atol=0.5 / SIZE)
  residual = np.abs(similar.numpy()[0] - TEMPLATE).max() * SIZE
  assert residual > 2.0
  # The similarity fit is the least-squares one: its residuals sum to zero.
  np.testing.assert_allclose((similar.numpy()[0] - TEMPLATE).sum(0), 0,
                             atol=1e-4)
  with pytest.raises(ValueError, match='one of affine, similarity, tps'):
    alignment.align(images, *args, kind='projective')


@pytest.mark.parametrize('kind', ['affine', 'similarity'])
def test_landmarks_on_one_spot_leave_the_image_unaligned(kind):
  """Nothing to fit a rotation or scale to: no singular warp, no error."""
  landmarks = tf.fill([2, 3, 2], 0.5)
  images = tf.random.stateless_uniform([2, SIZE, SIZE, 1], [0, 9])
  forward = alignment.fit_transforms(landmarks, tf.ones([2, 3]), TEMPLATE,
                                     SIZE, SIZE, kind).numpy()
  np.testing.assert_allclose(forward, np.tile(np.eye(3), [2, 1, 1]),
                             atol=1e-6)
  aligned, _, _ = alignment.align(images, landmarks, tf.ones([2, 3]),
                                  TEMPLATE, kind)
  np.testing.assert_allclose(aligned, images, atol=1e-5)


# ---- thin-plate-spline alignment (kind 'tps') --------------------------------

TEMPLATE5 = np.array([[0.38, 0.3], [0.62, 0.3], [0.36, 0.52], [0.64, 0.52],
                      [0.5, 0.78]], np.float32)


def _numpy_spline_map(template, landmarks, visible, size):
  """The textbook thin-plate spline through the visible points only (float64
  solve), template -> image, at every pixel centre: [S, S, 2] pixels."""
  keep = np.asarray(visible).astype(bool)
  controls = (template[keep] * size - 0.5) / size
  targets = (landmarks[keep] * size - 0.5) / size
  kernel = lambda d2: np.where(d2 > 1e-12, d2 * np.log(np.maximum(d2, 1e-12)),
                               0)
  n = len(controls)
  d2 = ((controls[:, None] - controls[None]) ** 2).sum(-1)
  affine = np.concatenate([np.ones((n, 1)), controls], 1)
  system = np.block([[kernel(d2), affine], [affine.T, np.zeros((3, 3))]])
  coefficients = np.linalg.solve(system, np.concatenate([targets,
                                                         np.zeros((3, 2))]))
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  grid = np.stack([xs, ys], -1).reshape(-1, 2) / size
  d2 = ((grid[:, None] - controls[None]) ** 2).sum(-1)
  basis = np.concatenate([kernel(d2), np.ones((len(grid), 1)), grid], 1)
  return (basis @ coefficients * size).reshape(size, size, 2)


def _numpy_bilinear(image, grid):
  """Bilinear sampling with neighbours outside the image as the mean."""
  mean = image.mean(axis=(0, 1))
  centred = image - mean
  h, w = image.shape[:2]
  out = np.zeros(grid.shape[:2] + image.shape[2:])
  x0, y0 = np.floor(grid[..., 0]), np.floor(grid[..., 1])
  for dx in (0, 1):
    for dy in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      weight = ((1 - np.abs(grid[..., 0] - xi)) * (1 - np.abs(grid[..., 1] - yi)))
      inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
      values = centred[np.clip(yi, 0, h - 1).astype(int),
                       np.clip(xi, 0, w - 1).astype(int)]
      out += values * (weight * inside)[..., None]
  return out + mean


def _smooth_image(size, seed):
  rng = np.random.default_rng(seed)
  coarse = rng.random((6, 6, 2)).astype(np.float32)
  import cv2
  return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _bent_landmarks(seed):
  """The template moved by an affine map and a non-affine bend, in frame."""
  rng = np.random.default_rng(seed)
  centred = TEMPLATE5 - 0.5
  linear = np.array([[0.9, 0.2], [-0.15, 1.05]])
  moved = centred @ linear.T + 0.5 + rng.uniform(-0.04, 0.04, 2)
  moved[:, 0] += 0.5 * centred[:, 1] ** 2            # the tail swings
  return moved.astype(np.float32)


@pytest.mark.parametrize('visible', [[1, 1, 1, 1, 1], [1, 0, 1, 1, 1],
                                     [0, 1, 1, 1, 1]])
def test_spline_alignment_matches_numpy_and_opencv(visible):
  import cv2
  images = np.stack([_smooth_image(SIZE, 0), _smooth_image(SIZE, 1)])
  landmarks = np.stack([_bent_landmarks(0), _bent_landmarks(1)])
  shown = np.array([visible, [1, 1, 1, 1, 1]], np.float32)
  aligned, moved, after = alignment.align(images, landmarks, shown,
                                          TEMPLATE5, kind='tps')
  for b in range(2):
    grid = _numpy_spline_map(TEMPLATE5, landmarks[b], shown[b], SIZE)
    np.testing.assert_allclose(aligned.numpy()[b],
                               _numpy_bilinear(images[b], grid), atol=2e-4)
    mean = images[b].mean(axis=(0, 1))
    remapped = cv2.remap(images[b] - mean, grid[..., 0].astype(np.float32),
                         grid[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0) + mean
    # OpenCV rounds the sampling position to 1/32 pixel, and blends the
    # border differently: compare where all four neighbours are inside.
    inner = np.all((grid >= 0) & (grid <= SIZE - 1), axis=-1)
    assert inner.mean() > 0.5
    np.testing.assert_allclose(aligned.numpy()[b][inner], remapped[inner],
                               atol=5e-3)
    # Every visible landmark lands exactly on the template.
    np.testing.assert_allclose(moved.numpy()[b] * shown[b][:, None],
                               TEMPLATE5 * shown[b][:, None], atol=1e-6)
  np.testing.assert_array_equal(after.numpy(), shown)


def test_spline_through_an_affine_map_is_that_affine_map():
  """Landmarks that are an affine image of the template: no bend to fit, so
  the spline alignment is the affine one."""
  forward = np.eye(3)
  forward[:2] = [[1.1, 0.25, -5.0], [-0.2, 0.9, 3.0]]
  source = _normalised(_apply(np.linalg.inv(forward), _pixels(TEMPLATE5)))
  images = _smooth_image(SIZE, 2)[None]
  args = (images, source[None].astype(np.float32), np.ones((1, 5)), TEMPLATE5)
  spline = alignment.align(*args, kind='tps')
  affine = alignment.align(*args, kind='affine')
  for a, b in zip(spline, affine):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


@pytest.mark.parametrize('visible', [[1, 1, 0, 0, 1], [1, 0, 0, 0, 1],
                                     [0, 0, 1, 0, 0]])
def test_spline_falls_back_to_affine_similarity_or_nothing(visible):
  """Fewer than 4 visible landmarks: what kind 'affine' does (an affine fit
  with 3, a similarity with 2, no warp with 1), image and landmarks."""
  images = _smooth_image(SIZE, 3)[None]
  args = (images, _bent_landmarks(3)[None], np.array([visible], np.float32),
          TEMPLATE5)
  spline = alignment.align(*args, kind='tps')
  affine = alignment.align(*args, kind='affine')
  for a, b in zip(spline, affine):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


def test_spline_alignment_in_tf_data_equals_eager_and_three_landmarks_unchanged():
  images = tf.constant(np.stack([_smooth_image(SIZE, 4)] * 2))
  landmarks = tf.constant(np.stack([_bent_landmarks(4), _bent_landmarks(5)]))
  visible = tf.constant([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1]], tf.float32)
  eager = alignment.align(images, landmarks, visible, TEMPLATE5, 'tps')
  graph = next(iter(tf.data.Dataset.from_tensors(
      (images, landmarks, visible)).map(
          lambda i, l, v: alignment.align(i, l, v, TEMPLATE5, 'tps'))))
  for a, b in zip(eager, graph):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
  # With 3-landmark data 'tps' is the affine alignment, bit for bit.
  three = (images, landmarks[:, :3], visible[:, :3], TEMPLATE)
  for a, b in zip(alignment.align(*three, 'tps'),
                  alignment.align(*three, 'affine')):
    np.testing.assert_array_equal(a.numpy(), b.numpy())

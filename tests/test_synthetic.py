"""The synthetic generator: determinism and landmark geometry."""

import csv
import os

import cv2
import numpy as np
import pytest

from conftest import folder_digest
from data_tools import make_synthetic
from data_tools import synthetic


def _generate(out, workers, seed=0):
  cfg = make_synthetic.DatasetConfig(out=str(out), identities=3, seed=seed,
                                     workers=workers, progress=False,
                                     synth=synthetic.SynthConfig(size=32))
  make_synthetic.generate(cfg)
  return folder_digest(out)


def test_same_seed_same_dataset_whatever_the_workers(tmp_path):
  one = _generate(tmp_path / 'a', workers=1)
  two = _generate(tmp_path / 'b', workers=2)
  other_seed = _generate(tmp_path / 'c', workers=1, seed=1)
  assert one == two
  assert one != other_seed


def test_split_layout_and_annotations(tmp_path):
  cfg = make_synthetic.DatasetConfig(out=str(tmp_path), identities=4,
                                     progress=False,
                                     synth=synthetic.SynthConfig(size=32))
  path = make_synthetic.generate(cfg)
  with open(path) as f:
    rows = list(csv.DictReader(f))
  by_split = {}
  for row in rows:
    by_split.setdefault(row['split'], []).append(row['identity'])
  assert {s: len(v) for s, v in by_split.items()} == {
      'train': 4 * 3, 'gallery': 4 * 3, 'query': 4 * 5}
  assert not set(by_split['train']) & set(by_split['gallery'])
  assert set(by_split['gallery']) == set(by_split['query'])
  for row in rows:
    image = cv2.imread(os.path.join(str(tmp_path), row['path']),
                       cv2.IMREAD_UNCHANGED)
    assert image.shape == (32, 32) and image.dtype == np.uint8


@pytest.mark.parametrize('seed', range(5))
def test_landmarks_land_on_warped_triangle_corners(seed):
  """Warp a dot at each canonical corner with the example's homography: the
  recorded landmark must be within a pixel of the dot's centre."""
  cfg = synthetic.SynthConfig(size=128)
  rng = np.random.default_rng(seed)
  homography = synthetic.random_homography(rng, cfg)
  corners = synthetic.CANONICAL_CORNERS * cfg.size
  expected = synthetic.warp_points(homography, corners)
  for corner, landmark in zip(corners, expected):
    dot = synthetic.pattern_mask(
        [synthetic.Ellipse(corner[0], corner[1], 3, 3, 0)], cfg.size)
    warped = synthetic.warp_image(dot, homography, cfg.size)
    if warped.sum() < 5:  # the corner left the frame
      continue
    ys, xs = np.mgrid[:cfg.size, :cfg.size]
    centre = np.array([(xs * warped).sum(), (ys * warped).sum()]) / warped.sum()
    # Pixel (i, j) covers [j, j+1): its centre is at j + 0.5.
    np.testing.assert_allclose(centre + 0.5, landmark, atol=1.0)


def test_render_example_marks_corners_outside_the_frame_invisible():
  cfg = synthetic.SynthConfig(size=64, min_scale=2.0, max_scale=2.0)
  pattern = synthetic.seed_pattern(np.random.default_rng(0), cfg)
  _, landmarks, visible = synthetic.render_example(
      pattern, np.random.default_rng(1), cfg)
  inside = np.all((landmarks >= 0) & (landmarks < 64), axis=1)
  np.testing.assert_array_equal(visible, inside)
  assert not visible.all()


def test_background_is_lighter_than_the_pattern():
  cfg = synthetic.SynthConfig(size=64, noise_std=0.0)
  pattern = synthetic.seed_pattern(np.random.default_rng(0), cfg)
  rng = np.random.default_rng(3)
  image, _, _ = synthetic.render_example(pattern, rng, cfg)
  mask = synthetic.warp_image(synthetic.pattern_mask(pattern, 64),
                              synthetic.random_homography(
                                  np.random.default_rng(3), cfg), 64)
  assert image[mask > 0.99].max() < image[mask < 0.01].min()


def test_backgrounds_dir_textures(tmp_path):
  photos = tmp_path / 'photos'
  photos.mkdir()
  cv2.imwrite(str(photos / 'a.png'),
              (np.random.default_rng(0).random((40, 50)) * 255).astype('uint8'))
  cfg = make_synthetic.DatasetConfig(out=str(tmp_path / 'out'), identities=1,
                                     backgrounds_dir=str(photos),
                                     progress=False,
                                     synth=synthetic.SynthConfig(size=32))
  make_synthetic.generate(cfg)
  assert len(os.listdir(tmp_path / 'out' / 'images' / 'query')) == 5
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no readable images'):
    make_synthetic._load_photos(str(tmp_path / 'empty'))


def test_hard_variant_changes_pixels_not_landmarks():
  """Deformation, occlusion and lighting draw from their own generator: the
  landmarks (and the plain variant) are unchanged, the image is not."""
  plain = synthetic.SynthConfig(size=64)
  hard = synthetic.SynthConfig(size=64, **synthetic.HARD)
  pattern = synthetic.seed_pattern(np.random.default_rng(0), plain)
  render = lambda cfg, hard_seed: synthetic.render_example(
      pattern, np.random.default_rng(5), cfg, (),
      np.random.default_rng(hard_seed))
  image, points, visible = render(plain, 1)
  same, _, _ = render(plain, 2)
  np.testing.assert_array_equal(image, same)   # hard_rng unused when plain
  hard_image, hard_points, hard_visible = render(hard, 1)
  again, _, _ = render(hard, 1)
  np.testing.assert_array_equal(hard_image, again)
  np.testing.assert_array_equal(points, hard_points)
  np.testing.assert_array_equal(visible, hard_visible)
  assert np.abs(hard_image.astype(int) - image).mean() > 5


def test_elastic_field_is_bounded_and_smooth():
  dx, dy = synthetic.elastic_field(np.random.default_rng(0), 64, 3.0)
  assert np.abs(dx).max() <= 3.0 and np.abs(dy).max() <= 3.0
  # Smooth: neighbouring pixels move by less than a pixel, so no folding.
  assert np.abs(np.diff(dx, axis=1)).max() < 1.0
  light = synthetic.lighting_field(np.random.default_rng(0), 64, 0.5)
  assert light.min() == pytest.approx(0.5, abs=1e-5) and light.max() <= 1.0


def test_body_variant_draws_the_triangle_whose_corners_are_the_landmarks():
  cfg = synthetic.SynthConfig(size=96, body=0.25)
  pattern = synthetic.seed_pattern(np.random.default_rng(1), cfg)
  image, points, _ = synthetic.render_example(
      pattern, np.random.default_rng(2), cfg, (), np.random.default_rng(3))
  plain, plain_points, _ = synthetic.render_example(
      pattern, np.random.default_rng(2), synthetic.SynthConfig(size=96), (),
      np.random.default_rng(3))
  np.testing.assert_array_equal(points, plain_points)
  inside = np.zeros((96, 96), np.uint8)
  cv2.fillPoly(inside, [np.round(points).astype(np.int32)], 1)
  ys, xs = np.mgrid[0:96, 0:96] + 0.5
  to_apex = np.hypot(xs - points[0, 0], ys - points[0, 1])
  changed = np.abs(image.astype(int) - plain) > 20
  # The body changed the pixels inside the triangle and of the round head
  # around the apex (which tells the apex from the other corners), not
  # those elsewhere.
  assert changed[inside == 1].mean() > 0.3
  assert changed[(inside == 0) & (to_apex < 3)].mean() > 0.9
  assert changed[(inside == 0) & (to_apex > 0.09 * 96 * 1.3)].mean() < 0.02

"""The manta-ray generator: landmarks, visibility, protocol, determinism."""

import csv
import dataclasses
import json

import cv2
import numpy as np
import pytest

from conftest import folder_digest

from data_tools import convert
from data_tools import make_synthetic
from data_tools import manta

SMALL = manta.MantaConfig(size=32)


def _layers(seed=0, cfg=SMALL):
  return manta.canonical_layers(
      manta.seed_identity(np.random.default_rng(seed), cfg), 2 * cfg.size)


def test_visibility_flags_agree_with_the_frame_and_the_occluders():
  layers = _layers()
  inside_hidden = 0
  for seed in range(60):
    image, points, visible = manta.render_example(
        layers, np.random.default_rng(seed), SMALL)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    inside = np.all((points >= 0) & (points < 32), axis=1)
    # Visible only inside the frame; outside the frame never visible.
    assert not np.any(visible & ~inside), seed
    inside_hidden += int(np.sum(inside & ~visible))
  # Some landmarks in the frame are hidden (behind a fish).
  assert inside_hidden == 5


@pytest.mark.parametrize('seed', range(3))
def test_landmarks_are_where_the_bent_body_puts_them(seed):
  """A dot painted at each canonical landmark, rendered through the view's
  backward map, is centred within half a pixel of the recorded landmark."""
  cfg = dataclasses.replace(manta.MantaConfig(size=96), min_zoom=0.8,
                            max_zoom=1.0, framing_shift=0.0)
  view = manta.random_view(np.random.default_rng(seed), cfg)
  canonical, _, converged = manta.backward_map(view)
  expected = manta.landmarks_of(view)
  pixel = np.floor(expected).astype(int)
  assert converged[pixel[:, 1], pixel[:, 0]].all()
  resolution = 384
  for point, landmark in zip(manta.CANONICAL_LANDMARKS, expected):
    dot = np.zeros((resolution, resolution), np.float32)
    cv2.circle(dot, tuple(int(v) for v in np.round(point * resolution * 16
                                                   - 8)), 4 * 16, 1.0, -1,
               cv2.LINE_AA, 4)
    grid = (canonical * resolution - 0.5).astype(np.float32)
    seen = cv2.remap(dot, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0:96, 0:96] + 0.5
    centre = np.array([(xs * seen).sum(), (ys * seen).sum()]) / seen.sum()
    np.testing.assert_allclose(centre, landmark, atol=0.5)


def test_the_bend_is_not_a_homography_and_moves_the_landmarks():
  """Unbent, the landmarks are the plane's homography of the canonical ones;
  bent, the best homography through them misses (by 0.7 px here)."""
  cfg = manta.MantaConfig(size=128)
  view = manta.random_view(np.random.default_rng(3), cfg)
  flat = dataclasses.replace(view, fold=(0.0, 0.0), arch=0.0, swing=0.0)
  homography = manta.plane_homography(flat)
  from data_tools import synthetic
  np.testing.assert_allclose(
      manta.landmarks_of(flat),
      synthetic.warp_points(homography, manta.CANONICAL_LANDMARKS), atol=1e-9)
  bent = manta.landmarks_of(view)
  fitted, _ = cv2.findHomography(manta.CANONICAL_LANDMARKS, bent)
  residual = np.abs(synthetic.warp_points(fitted, manta.CANONICAL_LANDMARKS)
                    - bent).max()
  assert residual == pytest.approx(0.713, abs=0.001)


def test_visibility_mix_is_the_papers():
  """400 photos at 32 px: about 50 % with all five landmarks, 30 % with
  four, 20 % with three or fewer (§4.1.2)."""
  layers = _layers(1)
  counts = [manta.render_example(layers, np.random.default_rng([9, i]),
                                 SMALL)[2].sum() for i in range(400)]
  assert np.bincount(counts, minlength=6).tolist() == [0, 0, 6, 72, 114, 208]
  mix = manta.visibility_mix(counts)
  assert abs(mix['5'] - 0.5) < 0.05 and abs(mix['4'] - 0.3) < 0.05
  assert abs(mix['<=3'] - 0.2) < 0.05


def _dataset(out, seed=0, workers=1, **protocol):
  protocol = dict(make_synthetic.PROTOCOLS['manta'], identities=3,
                  test_identities=2, **protocol)
  cfg = make_synthetic.DatasetConfig(
      out=str(out), seed=seed, workers=workers, progress=False,
      variant='manta', synth=make_synthetic.synthetic.SynthConfig(size=24),
      **protocol)
  return cfg, make_synthetic.generate(cfg)


def test_same_seed_same_rays_whatever_the_workers(tmp_path):
  _dataset(tmp_path / 'a', train_images=2, query_images=2)
  _dataset(tmp_path / 'b', workers=2, train_images=2, query_images=2)
  _dataset(tmp_path / 'c', seed=1, train_images=2, query_images=2)
  assert folder_digest(tmp_path / 'a') == folder_digest(tmp_path / 'b')
  assert folder_digest(tmp_path / 'a') != folder_digest(tmp_path / 'c')


def test_the_papers_protocol_and_counts(tmp_path):
  """Defaults: 110 train identities x 13 (paper 1,422 images), 18 test
  identities x 18 (paper 321); the gallery is the train set plus two images
  of each test identity, the rest are queries."""
  protocol = make_synthetic.PROTOCOLS['manta']
  assert (protocol['identities'], protocol['test_identities']) == (110, 18)
  assert protocol['identities'] * protocol['train_images'] == 1430
  assert protocol['test_identities'] * (
      protocol['gallery_images'] + protocol['query_images']) == 324
  cfg, annotations = _dataset(tmp_path)
  with open(annotations) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0])[3:6] == ['right_eye_x', 'right_eye_y',
                                'right_eye_visible']
  assert len(rows[0]) == 3 + 3 * 5
  splits = {}
  for row in rows:
    splits.setdefault(row['split'], set()).add(row['identity'])
  assert {s: len(v) for s, v in splits.items()} == {
      'train': 3, 'gallery': 2, 'query': 2}
  summary = convert.convert(convert.ConvertConfig(
      annotations=annotations, out=str(tmp_path / 'records'),
      split_column='split', strict=True, workers=1, progress=False,
      gallery_includes_train=cfg.gallery_includes_train))
  images = {s: summary['splits'][s]['images'] for s in summary['splits']}
  assert images == {'train': 39, 'gallery': 39 + 4, 'query': 32}
  with open(tmp_path / 'records' / 'metadata.json') as f:
    assert json.load(f)['splits']['train']['num_classes'] == 3
  mix, count = make_synthetic.visibility_mix(annotations)
  assert count == 39 + 4 + 32
  assert sum(mix.values()) == pytest.approx(1.0)

"""The README's "From your photos to an answer", on photos made here.

JPEGs at 300 px, a CSV with the user's own column names
(`file,animal,nose_x,...`), a few bad rows, then convert -> train -> index ->
calibrate -> query with a landmark CSV that has no identity column, ending in
verdicts (text, JSON) and a review sheet.
"""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO

LANDMARKS = ('nose', 'fin_l', 'fin_r')
BODY = np.array([[150.0, 60.0], [60.0, 240.0], [240.0, 240.0]])


def _photo(rng, spots, path):
  """One 300 px JPEG of an animal: a body triangle with its own spots, at a
  random rotation, scale and shift. Returns its landmarks in pixels."""
  angle = rng.uniform(-np.pi, np.pi)
  scale = rng.uniform(0.7, 0.9)
  rotation = scale * np.array([[np.cos(angle), -np.sin(angle)],
                               [np.sin(angle), np.cos(angle)]])
  shift = np.array([150.0, 150.0]) + rng.uniform(-20, 20, 2)
  move = lambda p: (np.asarray(p) - 150.0) @ rotation.T + shift
  image = np.full((300, 300, 3), 190, np.uint8)
  image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(
      np.uint8)
  corners = move(BODY)
  cv2.fillPoly(image, [np.round(corners).astype(np.int32)], (150, 160, 170))
  for (x, y), radius in spots:
    cx, cy = move([x, y])
    cv2.circle(image, (int(cx), int(cy)), int(radius * scale), (30, 30, 40),
               -1, cv2.LINE_AA)
  cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
  return corners


def _spots(rng):
  """Spots inside the body triangle (barycentric sampling)."""
  weights = rng.dirichlet([2, 2, 2], size=6)
  return [(w @ BODY, rng.uniform(8, 16)) for w in weights]


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp('my_photos')
  rng = np.random.default_rng(7)
  rows = []
  for animal in range(10):
    spots = _spots(rng)
    for i in range(4):
      name = f'cam{animal % 3}/animal{animal:02d}_{i}.jpg'
      os.makedirs(root / os.path.dirname(name), exist_ok=True)
      corners = _photo(rng, spots, root / name)
      rows.append([name, f'a{animal:02d}'] + [f'{v:.1f}' for v in
                                             corners.ravel()])
  header = ['file', 'animal'] + [f'{n}_{a}' for n in LANDMARKS for a in 'xy']
  good = [list(r) for r in rows]
  for extra in ('cam1/extra_a.jpg', 'cam2/extra_b.jpg'):
    _photo(rng, _spots(rng), root / extra)
  bad = [
      ['cam0/missing.jpg', 'a00', '1', '2', '3', '4', '5', '6'],
      ['../../etc/hostname', 'a01', '1', '2', '3', '4', '5', '6'],
      ['cam1/short.jpg', 'a02', '1', '2', '3', '4', '5'],   # a field short
      ['cam1/extra_a.jpg', 'a01', 'x', '2', '3', '4', '5', '6'],
      ['cam2/extra_b.jpg', 'a02', '900', '2', '3', '4', '5', '6'],
  ]
  with open(root / 'my_animals.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(good[:20] + bad + good[20:])
  return root, rows


def _run(*args, cwd=REPO):
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd,
                        capture_output=True, text=True)


@pytest.mark.slow
def test_from_your_photos_to_an_answer(photos, tmp_path):
  root, rows = photos
  data, run = tmp_path / 'data', tmp_path / 'run'

  # 1. convert, naming the user's columns; bad rows are set aside.
  converted = _run('data_tools.convert', f'--annotations={root}/my_animals.csv',
                   '--path_field=file', '--identity_field=animal',
                   '--test_fraction=0.3', f'--out={data}')
  assert converted.returncode == 0, converted.stderr
  with open(data / 'rejects.csv') as f:
    reasons = {r['path']: r['reason'] for r in csv.DictReader(f)}
  assert 'outside the images root' in reasons['../../etc/hostname']
  assert reasons['cam0/missing.jpg'].startswith('missing file')
  assert 'non-numeric' in reasons['cam1/extra_a.jpg']
  assert 'out-of-frame' in reasons['cam2/extra_b.jpg']
  assert 'wrong landmark count' in reasons['cam1/short.jpg']
  assert len(reasons) == 5
  metadata = json.loads((data / 'metadata.json').read_text())
  assert metadata['landmark_names'] == list(LANDMARKS)

  # 2. train (a tiny run; the README uses configs/demo.flags).
  trained = _run('lmid_tf.train', f'--flagfile={REPO}/configs/demo.flags',
                 f'--data={data}', f'--run_dir={run}', '--image_size=32',
                 '--identities_per_batch=4', '--images_per_identity=2',
                 '--steps_per_epoch=2', '--phase=a trains=all lr=1e-3 epochs=1')
  assert trained.returncode == 0, trained.stderr
  model = str(run / 'embedding_model.keras')
  catalogue = str(tmp_path / 'catalogue.npz')

  # 3. catalogue and threshold.
  for command in (['index', f'--gallery={data}'],
                  ['calibrate', f'--held_out={data}']):
    done = _run('lmid_tf.identify', *command, f'--model={model}',
                f'--catalogue={catalogue}')
    assert done.returncode == 0, done.stderr

  # 4. query: a landmark CSV with only path + landmark columns. The first
  # photo is also in the catalogue, so it must come back as itself.
  from lmid_tf.identification import catalogue as catalogue_lib
  known = catalogue_lib.load(catalogue)
  catalogued = str(known.paths[0])
  chosen = [r for r in rows if r[0] == catalogued] + rows[-2:]
  with open(tmp_path / 'queries.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['file'] + [f'{n}_{a}' for n in LANDMARKS for a in 'xy'])
    writer.writerows([[r[0]] + r[2:] for r in chosen])
  images = ','.join(str(root / r[0]) for r in chosen)
  sheet = tmp_path / 'review.png'
  query = ['lmid_tf.identify', 'query', f'--model={model}',
           f'--catalogue={catalogue}', f'--images={images}',
           f'--landmarks={tmp_path}/queries.csv', f'--images_root={root}',
           '--path_field=file', '--top_k=3']
  text = _run(*query, f'--sheet={sheet}')
  assert text.returncode == 0, text.stderr
  answers = [json.loads(line) for line in
             _run(*query, '--json').stdout.splitlines()]
  assert len(answers) == 3
  first = answers[0]
  assert first['identity'] == str(known.names[0])
  assert first['nearest'] == pytest.approx(0.0, abs=1e-3)
  for answer in answers:
    expected = 'new' if answer['nearest'] > answer['threshold'] else 'known'
    assert answer['verdict'] == expected
    assert answer['text'] in text.stdout
    assert len(answer['matches']) == 3
  picture = cv2.imread(str(sheet))
  # Three rows: verdict band, then query + 3 candidates with captions.
  assert picture.shape[1] == 4 * (128 + 4)
  assert picture.shape[0] == 3 * (26 + 128 + 36 + 4)

  # A photo the landmark CSV does not list: a clear error naming it.
  stray = _run(*query[:4], f'--images={root}/{rows[5][0]}',
               f'--landmarks={tmp_path}/queries.csv', f'--images_root={root}',
               '--path_field=file')
  assert stray.returncode == 1
  assert f'no row for photo {root}/{rows[5][0]}' in stray.stderr


def test_offline_imagenet_init_says_what_to_do(monkeypatch):
  import keras
  from conftest import tiny_settings
  from lmid_tf import config
  from lmid_tf.modeling import model

  def no_network(*args, **kwargs):
    raise Exception('URL fetch failure on https://storage.googleapis.com/x: '
                    'None -- [Errno -3] Temporary failure in name resolution')

  monkeypatch.setattr(keras.applications, 'MobileNetV2', no_network)
  monkeypatch.setitem(model.BACKBONES, 'mobilenet_v2_0.35',
                      (no_network, {}))
  cfg = config.resolve(tiny_settings(init='imagenet'), num_classes=3,
                       channels=1, num_landmarks=3)
  with pytest.raises(ValueError) as error:
    model._reference_backbone(cfg.model)
  message = str(error.value)
  assert '--init=imagenet' in message and '--init=none' in message
  assert '.keras/models' in message


def test_init_from_weights_of_another_backbone_is_refused(tmp_path):
  from conftest import tiny_settings
  from lmid_tf import config
  from lmid_tf.modeling import model
  other = model.small_cnn(input_shape=(32, 32, 3))
  other.save_weights(str(tmp_path / 'cnn.weights.h5'))
  cfg = config.resolve(tiny_settings(init=str(tmp_path / 'cnn.weights.h5')),
                       num_classes=3, channels=1, num_landmarks=3)
  with pytest.raises(ValueError, match='not mobilenet_v2_0.35 weights'):
    model.build_model(cfg.model)
  missing = config.resolve(tiny_settings(init=str(tmp_path / 'none.h5')),
                           num_classes=3, channels=1, num_landmarks=3)
  with pytest.raises(ValueError, match='no such file'):
    model.build_model(missing.model)

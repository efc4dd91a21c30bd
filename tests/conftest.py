"""Shared test fixtures: tiny synthetic datasets and a tiny trained model.

Everything is made in temporary folders by the tests themselves; nothing is
downloaded and nothing outside the repository is read.
"""

import csv
import io
import os
import re
import sys
import time
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings('ignore', message='This model usually expects')

import pytest  # noqa: E402

import lmid_tf  # noqa: E402,F401  (TensorFlow's start-up logs off)
from data_tools import convert  # noqa: E402
from data_tools import make_synthetic  # noqa: E402
from data_tools import synthetic  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder_digest(folder) -> str:
  """SHA-256 of every file's name and bytes under `folder`, in sorted
  order: equal digests mean the same files (determinism tests)."""
  import hashlib
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      with open(os.path.join(root, name), 'rb') as f:
        digest.update(name.encode() + f.read())
  return digest.hexdigest()


def make_dataset(out, identities=6, size=32, seed=0, train=3, gallery=3,
                 query=3):
  """Generates and converts a tiny synthetic dataset; returns tfrecords dir."""
  cfg = make_synthetic.DatasetConfig(
      out=str(out), identities=identities, train_images=train,
      gallery_images=gallery, query_images=query, seed=seed, workers=1,
      synth=synthetic.SynthConfig(size=size), progress=False)
  annotations = make_synthetic.generate(cfg)
  records_dir = os.path.join(str(out), 'tfrecords')
  convert.convert(convert.ConvertConfig(
      annotations=annotations, out=records_dir, split_column='split',
      strict=True, workers=1, progress=False))
  return records_dir


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
  """8 identities per split, 32 px; returns the TFRecord folder."""
  return make_dataset(tmp_path_factory.mktemp('tiny'), identities=8)


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, tiny_dataset):
  """A Landmark-Id model trained for a few steps at 32 px: its run folder.

  It aligns its inputs and has the landmark pooling branch and falloff
  heatmaps, so the export, serving and identification tests that use it
  cover them too (the training tests cover the paper's plain network).
  """
  from lmid_tf import train
  run_dir = str(tmp_path_factory.mktemp('run'))
  cfg = tiny_train_config(tiny_dataset, run_dir, landmark_pooling_bins=4,
                          heatmap_falloff=0.5, align=True)
  assert len(cfg.preprocess.template) == 3
  train.train(cfg)
  return run_dir


TINY_SCHEDULE = ('stage1 trains=all lr=1e-3 epochs=1; '
                 'stage2 trains=all lr=1e-4 epochs=1 reconstruct=1')


def tiny_settings(data='', run_dir='', **overrides):
  """config.Settings for 32-px tests: light backbone, random init, few steps."""
  from lmid_tf import config
  return config.Settings(**_tiny_values(data, run_dir, **overrides))


def tiny_flags(data, run_dir, **overrides) -> list:
  """The same settings as command-line flags, for tests that run the CLI."""
  args = []
  for name, value in _tiny_values(data, str(run_dir), **overrides).items():
    if isinstance(value, bool):
      args.append(f'--{"" if value else "no"}{name}')
    else:
      args.append(f'--{name}={value}')
  return args


def _tiny_values(data, run_dir, **overrides) -> dict:
  values = dict(data=data, run_dir=run_dir, backbone='mobilenet_v2_0.35',
                init='none', image_size=32, embedding_dim=32,
                identities_per_batch=4, images_per_identity=2,
                steps_per_epoch=2, eval_every=0, eval_batch_size=32,
                schedule=TINY_SCHEDULE)
  values.update(overrides)
  if (values.get('variant') == 'baseline'
      and values['schedule'] == TINY_SCHEDULE):
    values['schedule'] = TINY_SCHEDULE.replace(' reconstruct=1', '')
  return values


def tiny_train_config(data, run_dir, **overrides):
  """A TrainConfig built through config.build, as the CLI builds it."""
  from lmid_tf import config
  return config.build(tiny_settings(data, run_dir, **overrides))


@pytest.fixture(scope='session')
def trained_landmark_model(tmp_path_factory, tiny_dataset):
  """A landmark predictor trained for a few steps at 32 px: its .keras path
  (preprocess.json beside it)."""
  from lmid_tf import train_landmarks
  run_dir = str(tmp_path_factory.mktemp('landmarks'))
  train_landmarks.train_landmarks(tiny_train_config(
      tiny_dataset, run_dir, steps_per_epoch=3,
      schedule='a trains=all lr=3e-3 epochs=1'))
  return os.path.join(run_dir, 'landmark_model.keras')


@pytest.fixture(scope='session')
def confident_landmark_model(tmp_path_factory, trained_landmark_model):
  """trained_landmark_model made sure of every landmark in every photo (its
  visibility head's bias raised to +20), so tests of refinement know which
  predictions pass the confidence bar whatever the few steps learned."""
  import shutil
  import keras
  folder = tmp_path_factory.mktemp('confident_landmarks')
  shutil.copy(os.path.join(os.path.dirname(trained_landmark_model),
                           'preprocess.json'), folder)
  net = keras.saving.load_model(trained_landmark_model)
  kernel, bias = net.get_layer('visibility').get_weights()
  net.get_layer('visibility').set_weights([kernel, bias + 20.0])
  path = str(folder / 'landmark_model.keras')
  net.save(path)
  return path


# ---- the review desk (tests/test_review_app.py, test_review_browser.py) ------

@pytest.fixture(scope='session')
def desk_export(request, tmp_path_factory):
  """A tiny aligned Landmark-Id export with the landmark predictor. The
  small CNN, because after a few steps its embedding already moves with
  the photo and its landmarks (which the tests check)."""
  from lmid_tf import train
  from serving import export
  run_dir = str(tmp_path_factory.mktemp('desk_run'))
  train.train(tiny_train_config(request.getfixturevalue('tiny_dataset'),
                                run_dir, backbone='small_cnn', align=True))
  return export.export(
      os.path.join(run_dir, 'embedding_model.keras'),
      str(tmp_path_factory.mktemp('desk_export')),
      landmark_model_path=request.getfixturevalue('trained_landmark_model'))


@pytest.fixture(scope='session')
def embedder(desk_export):
  from review import embedder as embedder_lib
  return embedder_lib.Embedder(desk_export)


def dataset_photos(tiny_dataset, split='gallery') -> list:
  """[(file name, PNG bytes, identity, [[x, y] | None] * K)] of a split of
  the tiny dataset, sorted by name."""
  root = os.path.dirname(tiny_dataset)
  with open(os.path.join(root, 'annotations.csv')) as f:
    rows = [r for r in csv.DictReader(f) if r['split'] == split]
  names = [c[:-2] for c in rows[0] if c.endswith('_x')]
  photos = []
  for row in sorted(rows, key=lambda r: r['path']):
    with open(os.path.join(root, row['path']), 'rb') as f:
      data = f.read()
    points = [[float(row[f'{n}_x']), float(row[f'{n}_y'])]
              if row[f'{n}_visible'] == '1' else None for n in names]
    photos.append((os.path.basename(row['path']), data, row['identity'],
                   points))
  return photos


def landmark_csv(photos, names, extra=None) -> bytes:
  """A sighting CSV with the photos' landmarks (and extra columns)."""
  extra = extra or {}
  columns = sorted({k for v in extra.values() for k in v})
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(['file'] + columns + [f'{n}_{a}' for n in names
                                        for a in 'xy'])
  for name, _, _, points in photos:
    cells = [name] + [extra.get(name, {}).get(c, '') for c in columns]
    for point in points:
      cells += ['', ''] if point is None else [f'{point[0]:.3f}',
                                               f'{point[1]:.3f}']
    writer.writerow(cells)
  return out.getvalue().encode()


def make_app(tmp_path, embedder, **overrides):
  from review import desk
  os.makedirs(tmp_path / 'photos', exist_ok=True)
  values = dict(catalogue=str(tmp_path / 'cat.sqlite'), model=embedder.path,
                photo_root=str(tmp_path / 'photos'))
  values.update(overrides)
  app = desk.create_app(desk.DeskConfig(**values), embedder)
  app.testing = True
  return app


def token_of(html: str) -> str:
  return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def signed_in(app, name='ana'):
  """(client, csrf token) of a reviewer who has signed in."""
  client = app.test_client()
  token = token_of(client.get('/sign-in').get_data(as_text=True))
  response = client.post('/sign-in', data={'name': name,
                                           'csrf_token': token})
  assert response.status_code == 302, response.get_data(as_text=True)
  return client, token


def wait_for_job(client, location: str, timeout: float = 120) -> dict:
  job = location.rsplit('/', 1)[1]
  deadline = time.time() + timeout
  while time.time() < deadline:
    state = client.get(f'/import/job/{job}.json').get_json()
    if state['finished']:
      return state
    time.sleep(0.1)
  raise AssertionError(f'import {job} did not finish')


def upload(client, token, files, csv_bytes=None) -> dict:
  """Uploads [(name, bytes)] (+ a CSV) and waits for the import."""
  data = {'csrf_token': token,
          'photos': [(io.BytesIO(b), n) for n, b in files]}
  if csv_bytes is not None:
    data['csv'] = (io.BytesIO(csv_bytes), 'sightings.csv')
  response = client.post('/import/upload', data=data,
                         content_type='multipart/form-data')
  assert response.status_code == 302, response.get_data(as_text=True)
  return wait_for_job(client, response.headers['Location'])


def png(image) -> bytes:
  import cv2
  return cv2.imencode('.png', image)[1].tobytes()

def kill_rng():
  """A random.Random for choosing where to SIGKILL a run, and its seed:
  printed, and taken from $LMID_KILL_SEED when set, so that a failing kill
  point can be replayed (`LMID_KILL_SEED=... pytest ...`)."""
  import random
  seed = int(os.environ.get('LMID_KILL_SEED') or random.SystemRandom()
             .randrange(2**32))
  print(f'kill point seed: LMID_KILL_SEED={seed}', flush=True)
  return seed, random.Random(seed)

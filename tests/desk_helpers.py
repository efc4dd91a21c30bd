"""What the review desk's tests share: a tiny export with a landmark
predictor, its loaded embedder, a desk on a fresh catalogue, signed-in
clients, and photos of the tiny synthetic dataset with their landmarks."""

import csv
import io
import os
import re
import time

import cv2
import numpy as np
import pytest

from review import desk
from review import embedder as embedder_lib


@pytest.fixture(scope='session')
def desk_export(request, tmp_path_factory):
  """A tiny aligned Landmark-Id export with the landmark predictor. The
  small CNN, because after a few steps its embedding already moves with
  the photo and its landmarks (which the tests check)."""
  from conftest import tiny_train_config
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


def png(image: np.ndarray) -> bytes:
  return cv2.imencode('.png', image)[1].tobytes()

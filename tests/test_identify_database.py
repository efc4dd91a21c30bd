"""`identify index | calibrate | query` on a catalogue database: the same
ranking as the .npz catalogue of the same gallery, and the photos, their
landmarks and identities kept in the database."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification import photo_store
from test_identify import _export_photos


@pytest.mark.slow
def test_index_calibrate_query_on_a_database(trained_run, tiny_dataset,
                                             tmp_path):
  model = os.path.join(trained_run, 'embedding_model.keras')
  run = lambda catalogue, *a: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', *a, f'--model={model}',
       f'--catalogue={catalogue}'], cwd=REPO, capture_output=True, text=True)
  sqlite, npz = str(tmp_path / 'c.sqlite'), str(tmp_path / 'c.npz')
  for catalogue in (sqlite, npz):
    built = run(catalogue, 'index', f'--gallery={tiny_dataset}')
    assert built.returncode == 0, built.stderr
    assert '8 identities' in built.stdout
  assert 'is up to date' in run(sqlite, 'index',
                                f'--gallery={tiny_dataset}').stdout
  fingerprint = catalogue_lib.model_fingerprint(model)
  old = catalogue_lib.load(npz)
  with database.open(sqlite) as cat:
    assert len(identities.individuals(cat)) == 8
    rows = cat.rows('SELECT p.*, a.id AS annotation_id, a.landmarks FROM '
                    'photos p JOIN annotations a ON a.photo_id = p.id')
    assert len(rows) == len(old.names)
    for row in rows:
      assert photo_store.photo_file(cat, row).startswith(sqlite + '.photos')
      assert database.embedding(cat, row['annotation_id'],
                                fingerprint) is not None
      for point in json.loads(row['landmarks']):
        assert point is None or (0 <= point[0] <= row['width'] and
                                 0 <= point[1] <= row['height'])
  for catalogue in (sqlite, npz):
    calibrated = run(catalogue, 'calibrate', f'--held_out={tiny_dataset}',
                     '--target_fpr=0.1')
    assert calibrated.returncode == 0, calibrated.stderr
  with database.open(sqlite) as cat:
    assert database.threshold(cat, fingerprint) == pytest.approx(
        catalogue_lib.load(npz).threshold, abs=1e-5)
  csv_path, photos = _export_photos(tiny_dataset, 'query', tmp_path / 'q', 2)
  answers = []
  for catalogue in (sqlite, npz):
    queried = run(catalogue, 'query', f'--images={",".join(photos)}',
                  f'--landmarks={csv_path}', '--top_k=3', '--json',
                  f'--sheet={tmp_path}/sheet.png')
    assert queried.returncode == 0, queried.stderr
    answers.append([json.loads(line) for line in queried.stdout.splitlines()])
  for in_db, in_npz in zip(*answers):
    assert in_db['verdict'] == in_npz['verdict']
    assert [m['identity'] for m in in_db['matches']] == [
        m['identity'] for m in in_npz['matches']]
    np.testing.assert_allclose([m['distance'] for m in in_db['matches']],
                               [m['distance'] for m in in_npz['matches']],
                               atol=1e-4)

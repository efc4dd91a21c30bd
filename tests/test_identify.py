"""Identification: catalogues, queries, open-set threshold calibration."""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import indexing


def test_calibrate_threshold_on_hand_made_distances():
  known = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
  new = np.array([0.55, 0.85, 0.95, 1.2, 1.5])
  result = catalogue_lib.calibrate_threshold(known, new, target_fpr=0.2)
  assert result['threshold'] == pytest.approx(0.8)
  assert result['false_positive_rate'] == pytest.approx(0.2)   # 0.9, 1.0
  assert result['true_positive_rate'] == pytest.approx(0.8)    # all but 0.55
  strict = catalogue_lib.calibrate_threshold(known, new, target_fpr=0.0)
  assert strict['threshold'] == pytest.approx(1.0)
  assert strict['false_positive_rate'] == 0.0
  assert strict['true_positive_rate'] == pytest.approx(0.4)
  with pytest.raises(ValueError):
    catalogue_lib.calibrate_threshold([], new)


def _catalogue(threshold=float('nan')):
  return catalogue_lib.Catalogue(
      embeddings=np.array([[0, 0], [0, 1], [3, 0], [0, 0.5]], np.float32),
      names=np.array(['a', 'b', 'c', 'a']),
      paths=np.array(['a1.jpg', 'b1.jpg', 'c1.jpg', 'a2.jpg']),
      thumbnails=np.zeros((4, 8, 8, 3), np.uint8),
      landmarks=np.zeros((4, 3, 2), np.float32),
      visible=np.ones((4, 3), np.float32), fingerprint='x',
      threshold=threshold)


def test_rank_identities_one_entry_per_identity():
  catalogue = _catalogue()
  matches = catalogue_lib.rank_identities(np.array([0, 0.6], np.float32),
                                          catalogue, top_k=3)
  assert [(n, round(d, 3), g) for n, d, g in matches] == [
      ('a', 0.1, 3), ('b', 0.4, 1), ('c', 3.059, 2)]


@pytest.mark.parametrize('threshold,verdict,text', [
    (0.05, 'new', 'new individual? nearest 0.100 > threshold 0.050'),
    (0.5, 'known', 'known: a'),
    (float('nan'), 'uncalibrated', 'nearest: a'),
])
def test_every_photo_gets_a_verdict(threshold, verdict, text):
  catalogue = _catalogue(threshold)
  matches = catalogue_lib.rank_identities(np.array([0, 0.6], np.float32),
                                          catalogue, top_k=2)
  record = catalogue_lib.match_record('q.png', matches, catalogue)
  assert record['verdict'] == verdict and record['identity'] == 'a'
  assert record['text'].startswith(text)
  assert [m['catalogue_photo'] for m in record['matches']] == ['a2.jpg',
                                                               'b1.jpg']
  printed = catalogue_lib.format_record(record)
  assert printed.splitlines()[0] == f'q.png: {record["text"]}'
  assert json.loads(json.dumps(record)) == record


def test_catalogue_file_round_trip_is_atomic(tmp_path):
  path = str(tmp_path / 'c.npz')
  catalogue_lib.save(path, _catalogue(0.3))
  loaded = catalogue_lib.load(path)
  assert loaded.threshold == pytest.approx(0.3)
  np.testing.assert_array_equal(loaded.names, ['a', 'b', 'c', 'a'])
  assert os.listdir(tmp_path) == ['c.npz']   # no temporary left behind
  (tmp_path / 'bad.npz').write_bytes(b'not a catalogue')
  with pytest.raises(ValueError, match='not a catalogue'):
    catalogue_lib.load(str(tmp_path / 'bad.npz'))


def _export_photos(data_dir, split, folder, count):
  """Writes `count` images of a split as PNGs + an annotation CSV."""
  from lmid_tf.data import records
  metadata = records.read_metadata(data_dir)
  os.makedirs(folder, exist_ok=True)
  rows = []
  for i, serialized in enumerate(tf.data.TFRecordDataset(
      metadata.shard_paths(data_dir, split)).take(count)):
    example = records.parse(serialized, metadata.num_landmarks)
    image = tf.io.decode_image(example['encoded']).numpy()
    name = f'p{i}.png'
    cv2.imwrite(os.path.join(folder, name), image)
    h, w = image.shape[:2]
    row = [name, example['name'].numpy().decode()]
    for (x, y), v in zip(example['landmarks'].numpy(),
                         example['visible'].numpy()):
      row += [f'{x * w:.3f}', f'{y * h:.3f}'] if v else ['', '']
    rows.append(row)
  with open(os.path.join(folder, 'photos.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'identity'] + [
        f'{n}_{a}' for n in metadata.landmark_names for a in 'xy'])
    writer.writerows(rows)
  return os.path.join(folder, 'photos.csv'), [os.path.join(folder, r[0])
                                              for r in rows]


@pytest.mark.slow
def test_index_calibrate_query_cli(trained_run, tiny_dataset, tmp_path):
  model = os.path.join(trained_run, 'embedding_model.keras')
  catalogue = str(tmp_path / 'catalogue.npz')
  run = lambda *a: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', *a, f'--model={model}',
       f'--catalogue={catalogue}'], cwd=REPO, capture_output=True, text=True)

  built = run('index', f'--gallery={tiny_dataset}')
  assert built.returncode == 0, built.stderr
  assert 'wrote' in built.stdout and '8 identities' in built.stdout
  again = run('index', f'--gallery={tiny_dataset}')
  assert 'is up to date' in again.stdout
  first = catalogue_lib.load(catalogue)
  assert np.isnan(first.threshold)

  calibrated = run('calibrate', f'--held_out={tiny_dataset}',
                   '--target_fpr=0.1')
  assert calibrated.returncode == 0, calibrated.stderr
  assert 'new individuals caught' in calibrated.stdout
  threshold = catalogue_lib.load(catalogue).threshold
  assert np.isfinite(threshold)

  csv_path, photos = _export_photos(tiny_dataset, 'query', tmp_path / 'q', 2)
  sheet = str(tmp_path / 'sheet.png')
  queried = run('query', f'--images={",".join(photos)}',
                f'--landmarks={csv_path}', f'--sheet={sheet}', '--top_k=3')
  assert queried.returncode == 0, queried.stderr
  assert queried.stdout.count('  1. id') == 2
  assert os.path.getsize(sheet) > 500

  # A photo the CSV does not describe: a clear error, non-zero exit.
  missing = run('query', f'--images={tmp_path}/nope.png',
                f'--landmarks={csv_path}')
  assert missing.returncode == 1
  assert 'nope.png' in missing.stderr


def test_catalogue_from_photos_and_rebuild_when_gallery_changes(
    trained_run, tiny_dataset, tmp_path):
  model = os.path.join(trained_run, 'embedding_model.keras')
  csv_path, photos = _export_photos(tiny_dataset, 'gallery', tmp_path / 'g', 6)
  catalogue = indexing.build_catalogue(model, csv_path)
  assert catalogue.embeddings.shape[0] == 6
  assert catalogue.thumbnails.shape == (6, 64, 64, 3)
  # The same photos through the TFRecord path embed the same.
  from_records = indexing.build_catalogue(model, tiny_dataset)
  np.testing.assert_allclose(catalogue.embeddings,
                             from_records.embeddings[:6], atol=1e-4)
  assert from_records.paths[0].startswith('images/gallery/')
  before = catalogue.fingerprint
  cv2.imwrite(photos[0], np.zeros((32, 32), np.uint8))
  assert indexing.build_catalogue(model, csv_path).fingerprint != before


@pytest.mark.slow
def test_query_without_landmarks_uses_the_predictor(
    trained_run, trained_landmark_model, tiny_dataset, tmp_path):
  import shutil
  import keras
  model = os.path.join(trained_run, 'embedding_model.keras')
  catalogue = str(tmp_path / 'catalogue.npz')
  catalogue_lib.save(catalogue, indexing.build_catalogue(model, tiny_dataset))
  _, photos = _export_photos(tiny_dataset, 'query', tmp_path / 'q', 2)
  run = lambda predictor: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', 'query', f'--model={model}',
       f'--catalogue={catalogue}', f'--images={",".join(photos)}',
       f'--landmark_model={predictor}', '--json', '--top_k=2',
       f'--sheet={tmp_path}/sheet.png'],
      cwd=REPO, capture_output=True, text=True)
  found = run(trained_landmark_model)
  assert found.returncode == 0, found.stderr
  records = [json.loads(line) for line in found.stdout.splitlines()]
  assert [r['photo'] for r in records] == photos
  for record in records:
    assert record['verdict'] in ('uncalibrated', 'not_found')
  # A predictor that finds nothing: "landmarks not found", no match offered.
  blind = tmp_path / 'blind'
  blind.mkdir()
  net = keras.saving.load_model(trained_landmark_model)
  kernel, bias = net.get_layer('visibility').get_weights()
  net.get_layer('visibility').set_weights([kernel * 0, bias * 0 - 20])
  net.save(str(blind / 'landmark_model.keras'))
  shutil.copy(os.path.join(os.path.dirname(trained_landmark_model),
                           'preprocess.json'), blind)
  missing = run(blind / 'landmark_model.keras')
  assert missing.returncode == 0, missing.stderr
  for line in missing.stdout.splitlines():
    record = json.loads(line)
    assert record['verdict'] == 'not_found' and record['matches'] == []
    assert record['text'].startswith('landmarks not found')
  # Neither landmarks nor a predictor: say what to do.
  neither = subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', 'query', f'--model={model}',
       f'--catalogue={catalogue}', f'--images={photos[0]}'],
      cwd=REPO, capture_output=True, text=True)
  assert neither.returncode == 1 and '--landmark_model' in neither.stderr

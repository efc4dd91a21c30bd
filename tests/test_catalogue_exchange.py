"""What goes into the catalogue database and what comes out: .npz and CSV
imports (bad rows reported, the rest kept), the sightings CSV and the
capture history, checked value by value on a hand-made catalogue."""

import csv
import itertools
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import bridge
from lmid_tf.identification import database
from lmid_tf.identification import export
from lmid_tf.identification import identities
from lmid_tf.identification import importer
from lmid_tf.identification import reviews
from lmid_tf.identification import search


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
  ticks = itertools.count()
  monkeypatch.setattr(database, 'clock',
                      lambda: f'2026-07-01T09:00:{next(ticks):02d}.000000Z')


def _season(cat):
  """Five photos: one imported, one matched, one new, one unidentifiable,
  one waiting. Returns the reviews and annotation ids."""
  ids = {}
  for name, photo in [
      ('a', dict(taken_at='2026-05-01', location='North', latitude='-33.5',
                 longitude='18.25', viewpoint='left',
                 extra={'survey': 'S1'})),
      ('b', dict(taken_at='2026-05-09', location='North', latitude='',
                 longitude='', viewpoint='left')),
      ('c', dict(taken_at='2026-06-02', location='South', latitude=10,
                 longitude=-20, viewpoint='right')),
      ('d', dict()),
      ('e', dict(taken_at='2026-06-03'))]:
    photo_id, _ = database.add_photo(cat, f'h{name}', f'{name}.jpg', **photo)
    ids[name] = database.add_annotation(cat, photo_id)
  stripe = identities.create_individual(cat, 'Stripe', 'import')
  identities.assign(cat, ids['a'], stripe, 'import', reason='import')
  same = reviews.record_decision(cat, ids['b'], 'same', 'bob',
                                 candidate_annotation_id=ids['a'], model='m1',
                                 distance=0.25, rank=1, threshold=0.5)
  new = reviews.record_decision(cat, ids['c'], 'new', 'carl', new_name='Spot',
                                model='m1', distance=0.9, rank=1)
  gone = reviews.record_decision(cat, ids['d'], 'unidentifiable', 'bob',
                                 model='m1')
  return ids, same, new, gone


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.reader(f))


def test_sightings_and_capture_history_value_by_value(tmp_path):
  with database.open(str(tmp_path / 'c.sqlite')) as cat:
    ids, same, new, gone = _season(cat)
    stripe_set_at = identities.events(cat, annotation_id=ids['a'])[0]['at']
    result = export.export(cat, str(tmp_path / 'out'), occasion='month')
  assert (result['sightings'], result['individuals'], result['occasions'],
          result['skipped']) == (5, 2, 2, 0)
  rows = _read_csv(tmp_path / 'out' / 'sightings.csv')
  assert rows[0] == list(export.SIGHTING_COLUMNS) + ['survey']
  a, b, c, d, e = (str(ids[k]) for k in 'abcde')
  assert rows[1:] == [
      [a, 'a.jpg', 'Stripe', '2026-05-01', 'North', '-33.5', '18.25', 'left',
       'imported', 'import', stripe_set_at, '', '', 'S1'],
      [b, 'b.jpg', 'Stripe', '2026-05-09', 'North', '', '', 'left', 'same',
       'bob', same['decided_at'], '0.25', 'm1', ''],
      [c, 'c.jpg', 'Spot', '2026-06-02', 'South', '10.0', '-20.0', 'right',
       'new', 'carl', new['decided_at'], '0.9', 'm1', ''],
      [e, 'e.jpg', '', '2026-06-03', '', '', '', '', '', '', '', '', '', ''],
      [d, 'd.jpg', '', '', '', '', '', '', 'unidentifiable', 'bob',
       gone['decided_at'], '', 'm1', '']]
  assert _read_csv(tmp_path / 'out' / 'capture_history.csv') == [
      ['individual', '2026-05', '2026-06'], ['Spot', '0', '1'],
      ['Stripe', '1', '0']]
  with open(tmp_path / 'out' / 'capture_history.inp') as f:
    assert f.read() == (
        '/* lmid-tf capture history: 2 occasions (month): 2026-05 2026-06 */\n'
        '/* Spot */ 01 1;\n/* Stripe */ 10 1;\n')


@pytest.mark.parametrize('occasion,occasions,history,skipped', [
    ('day', ['2026-05-01', '2026-05-09', '2026-06-02'],
     {'Spot': [0, 0, 1], 'Stripe': [1, 1, 0]}, 0),
    ('week', ['2026-W18', '2026-W19', '2026-W23'],
     {'Spot': [0, 0, 1], 'Stripe': [1, 1, 0]}, 0),
    ('location', ['North', 'South'], {'Spot': [0, 1], 'Stripe': [1, 0]}, 0),
    ('survey', ['S1'], {'Stripe': [1]}, 2),
])
def test_capture_history_occasions(tmp_path, occasion, occasions, history,
                                   skipped):
  with database.open(str(tmp_path / 'c.sqlite')) as cat:
    _season(cat)
    rows = export.sightings(cat)
  assert export.capture_history(rows, occasion) == (occasions, history,
                                                    skipped)
  with pytest.raises(database.InvalidInput, match="occasion 'year'"):
    export.capture_history(rows, 'year')


def test_an_undone_match_leaves_the_sighting_unidentified(tmp_path):
  with database.open(str(tmp_path / 'c.sqlite')) as cat:
    ids, same, _, _ = _season(cat)
    reviews.undo(cat, same['id'], 'dora')
    row = next(r for r in export.sightings(cat)
               if r['annotation'] == ids['b'])
  assert (row['individual'], row['matched_by'], row['reviewer']) == ('', '',
                                                                      '')


def _hand_catalogue(threshold=0.3):
  return catalogue_lib.Catalogue(
      embeddings=np.array([[0, 0], [0, 1], [3, 0], [0, 0.5]], np.float32),
      names=np.array(['a', 'b', 'c', 'a']),
      paths=np.array(['a1.jpg', 'b1.jpg', 'c1.jpg', 'a2.jpg']),
      thumbnails=np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3),
      landmarks=np.zeros((4, 3, 2), np.float32),
      visible=np.ones((4, 3), np.float32), fingerprint='f' * 64,
      threshold=threshold, model='m' * 64)


def test_import_npz_keeps_embeddings_identities_and_threshold(tmp_path):
  npz = str(tmp_path / 'old.npz')
  catalogue_lib.save(npz, _hand_catalogue())
  with database.open(str(tmp_path / 'c.sqlite')) as cat:
    counts = bridge.import_npz(cat, npz)
    assert (counts['added'], counts['existing'], counts['individuals']) == (
        4, 0, 3)
    again = bridge.import_npz(cat, npz)
    assert (again['added'], again['existing']) == (0, 4)
    model = 'm' * 64
    assert database.threshold(cat, model) == pytest.approx(0.3)
    view = bridge.to_catalogue(cat, model, num_landmarks=3)
    np.testing.assert_array_equal(view.embeddings,
                                  _hand_catalogue().embeddings)
    assert view.names.tolist() == ['a', 'b', 'c', 'a']
    np.testing.assert_array_equal(view.thumbnails[2],
                                  _hand_catalogue().thumbnails[2])
    # the database ranks as the file did
    query = np.array([0, 0.6], np.float32)
    ranked = search.rank_vector(cat, query, model, top_k=3)
    assert [(r['individual'], round(r['distance'], 3)) for r in ranked] == [
        ('a', 0.1), ('b', 0.4), ('c', 3.059)]
    assert [(n, round(d, 3)) for n, d, _ in catalogue_lib.rank_identities(
        query, view, 3)] == [('a', 0.1), ('b', 0.4), ('c', 3.059)]


def _photos(folder, count=3):
  folder.mkdir()
  for i in range(count):
    image = np.full((30, 40, 3), 40 * i, np.uint8)
    cv2.imwrite(str(folder / f'p{i}.png'), image)
  (folder / 'notes.png').write_text('not an image')
  return folder


def _write_csv(path, header, rows):
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows([header] + rows)


def test_csv_import_reports_bad_rows_and_keeps_the_rest(tmp_path):
  folder = _photos(tmp_path / 'photos')
  header = ['path', 'identity', 'date', 'location', 'lat', 'lon', 'viewpoint',
            'nose_x', 'nose_y', 'camera_trap']
  _write_csv(folder / 'photos.csv', header, [
      ['p0.png', 'Stripe', '2026-05-01', 'North', '', '', 'left', '10', '5',
       'T1'],                                                        # line 2
      ['p1.png', '', '2026-02-30', '', '', '', '', '', '', ''],      # 3
      ['p1.png', '', '', '', '95.5', '10', '', '', '', ''],          # 4
      ['p1.png', 'Strpe', '', '', '', '', '', '', '', ''],           # 5
      ['missing.png', '', '', '', '', '', '', '', '', ''],           # 6
      ['notes.png', '', '', '', '', '', '', '', '', ''],             # 7
      ['p2.png', '', '', '', '', '', '', '41', '5', ''],             # 8
      ['p1.png', 'Stripe', '2026-05-03', 'South', '-12.5', '130.25', 'right',
       '', '', ''],                                                  # 9
      ['p0.png', 'Stripe', '', '', '', '', '', '', '', ''],          # 10
  ])
  with database.open(str(tmp_path / 'c.sqlite')) as cat:
    stripe = identities.create_individual(cat, 'Stripe', 'ana')
    counts = importer.import_csv(cat, str(folder / 'photos.csv'))
    where = str(folder / 'photos.csv')
    assert (counts['added'], counts['existing']) == (2, 1)
    reasons = dict(counts['rejects'])
    assert sorted(reasons) == [f'{where}:{n}' for n in (3, 4, 5, 6, 7, 8)]
    assert "'2026-02-30' is not a date" in reasons[f'{where}:3']
    assert "lat: '95.5' is outside -90..90" in reasons[f'{where}:4']
    assert "unknown individual 'Strpe'" in reasons[f'{where}:5']
    assert 'missing file' in reasons[f'{where}:6']
    assert 'not an image' in reasons[f'{where}:7']
    assert ('landmark 0 at (41, 5) is outside the photo (40 x 30 pixels)'
            in reasons[f'{where}:8'])
    first = database.photo(cat, 1)
    assert (first['latitude'], first['longitude'], first['taken_at'],
            first['location'], first['viewpoint'], first['extra']) == (
                None, None, '2026-05-01', 'North', 'left',
                {'camera_trap': 'T1'})
    assert (first['width'], first['height']) == (40, 30)
    second = database.photo(cat, 2)
    assert (second['latitude'], second['longitude']) == (-12.5, 130.25)
    assert [r['annotation_id'] for r in identities.photos_of(cat, stripe)] == [
        1, 2]
    assert database.annotation(cat, 1)['landmarks'] == [[10.0, 5.0]]
    assert [i['name'] for i in identities.individuals(cat)] == ['Stripe']
    assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 2


def test_checked_image_refuses_bombs_and_truncated_jpegs():
  ok, jpeg = cv2.imencode('.jpg', np.full((16, 24, 3), 100, np.uint8))
  assert importer.image_size(jpeg.tobytes()) == (24, 16)
  assert importer.checked_image(jpeg.tobytes())[1:] == (24, 16)
  with pytest.raises(database.InvalidInput, match='truncated'):
    importer.checked_image(jpeg.tobytes()[:len(jpeg) // 2])
  # a 20,000 x 20,000 PNG header: refused before decoding
  _, png = cv2.imencode('.png', np.zeros((4, 4), np.uint8))
  bomb = bytearray(png.tobytes())
  bomb[16:24] = (20000).to_bytes(4, 'big') * 2
  assert importer.image_size(bytes(bomb)) == (20000, 20000)
  with pytest.raises(database.InvalidInput, match='decompression bomb'):
    importer.checked_image(bytes(bomb))


@pytest.mark.slow
def test_import_and_export_command_lines(tmp_path):
  folder = _photos(tmp_path / 'photos', 2)
  _write_csv(folder / 'photos.csv', ['path', 'identity', 'date', 'lat'], [
      ['p0.png', 'Stripe', '2026-05-01', ''],
      ['p1.png', 'Spot', 'yesterday', '']])
  catalogue = str(tmp_path / 'c.sqlite')
  run = lambda *a: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', *a,
       f'--catalogue={catalogue}'], cwd=REPO, capture_output=True, text=True)
  imported = run('import', f'--source={folder}/photos.csv',
                 '--new_individuals')
  assert imported.returncode == 0, imported.stderr
  assert "photos.csv:3: date: 'yesterday' is not a date" in imported.stderr
  assert '1 new photos, 0 already in it, 1 refused' in imported.stdout
  exported = run('export', f'--out={tmp_path}/out', '--occasion=week')
  assert exported.returncode == 0, exported.stderr
  assert _read_csv(tmp_path / 'out' / 'capture_history.csv') == [
      ['individual', '2026-W18'], ['Stripe', '1']]
  missing = run('export')
  assert missing.returncode == 1 and 'export needs --out' in missing.stderr
  assert 'Traceback' not in missing.stderr


def test_import_dataset_stores_photos_landmarks_and_identities(tiny_dataset,
                                                               tmp_path):
  from lmid_tf.data import records
  from lmid_tf.identification import photo_store
  metadata = records.read_metadata(tiny_dataset)
  with database.open(str(tmp_path / 'c.sqlite')) as cat:
    counts = importer.import_dataset(cat, tiny_dataset, ['gallery'])
    expected = metadata.splits['gallery']['images']
    assert (counts['added'], counts['existing'], counts['rejects']) == (
        expected, 0, [])
    assert importer.import_dataset(cat, tiny_dataset, ['gallery'])[
        'existing'] == expected
    assert len(identities.individuals(cat)) == 8
    photo = database.photo(cat, 1)
    assert photo['extra'] == {'split': 'gallery'}
    with open(photo_store.photo_file(cat, photo), 'rb') as f:
      assert photo_store.hash_bytes(f.read()) == photo['content_hash']
    landmarks = database.annotation(cat, 1)['landmarks']
    assert len(landmarks) == metadata.num_landmarks
    assert all(0 <= x <= photo['width'] and 0 <= y <= photo['height']
               for x, y in filter(None, landmarks))

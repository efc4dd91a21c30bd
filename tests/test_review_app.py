"""The review desk through Flask's test client: every page, every decision,
undo, two reviewers, imports with bad files and bad CSV rows, annotation,
merge/split, exports, and the security cases (XSS, CSRF, paths, accounts)."""

import csv
import io
import os
import cv2
import numpy as np
import pytest

from lmid_tf.identification import database
from lmid_tf.identification import photo_store
from lmid_tf.identification import reviews
from review import security
from conftest import dataset_photos, landmark_csv, make_app, png, signed_in
from conftest import token_of, upload, wait_for_job

XSS = '<script>alert(1)</script>'


@pytest.fixture
def app(tmp_path, embedder):
  return make_app(tmp_path, embedder, max_upload_mb=1)


@pytest.fixture
def photos(tiny_dataset):
  """Two photos each of three individuals, with their landmarks."""
  by_identity = {}
  for photo in dataset_photos(tiny_dataset):
    by_identity.setdefault(photo[2], []).append(photo)
  return [p for name in sorted(by_identity)[:3] for p in by_identity[name][:2]]


def _cat(app):
  return database.open(app.config['DESK'].catalogue)


def _annotation_of(app, file_name):
  with _cat(app) as cat:
    return cat.row('SELECT a.id FROM annotations a JOIN photos p ON '
                   'p.id = a.photo_id WHERE p.original_path = ?',
                   (file_name,))['id']


@pytest.fixture
def imported(app, photos, embedder):
  """The six photos imported with their landmarks; (client, token)."""
  client, token = signed_in(app)
  state = upload(client, token, [(n, b) for n, b, _, _ in photos],
                 landmark_csv(photos, embedder.landmark_names))
  assert state['added'] == 6 and not state['refused'], state
  return client, token


def _decide(client, token, annotation_id, decision, **values):
  return client.post(f'/match/{annotation_id}/decide',
                     json=dict(decision=decision, **values),
                     headers={security.CSRF_HEADER: token})


def test_pages_need_a_reviewer_and_every_page_renders(app, imported, photos):
  assert app.test_client().get('/queue').status_code == 302
  client, _ = imported
  first = _annotation_of(app, photos[0][0])
  for path in ('/queue', '/queue?order=date', '/import', '/individuals',
               '/export', f'/annotate/{first}', f'/match/{first}'):
    response = client.get(path)
    assert response.status_code == 200, path
    assert '<b id="reviewer-name">ana</b>' in response.get_data(as_text=True)
  # Imported landmarks count as set by a person: nothing to annotate.
  assert 'Every photo has landmarks' in client.get('/annotate').get_data(
      as_text=True)


def test_csrf_token_is_required_on_every_post(app, photos):
  client, token = signed_in(app)
  files = lambda: {'photos': [(io.BytesIO(photos[0][1]), photos[0][0])]}
  refused = client.post('/import/upload', data=files(),
                        content_type='multipart/form-data')
  assert refused.status_code == 400 and 'CSRF' in refused.get_data(
      as_text=True)
  wrong = client.post('/import/upload', data=dict(
      files(), csrf_token=token + 'x'), content_type='multipart/form-data')
  assert wrong.status_code == 400
  assert client.post('/match/1/decide', json={'decision': 'new'}
                     ).status_code == 400
  with _cat(app) as cat:
    assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 0


def test_upload_lists_bad_files_with_the_reason_and_takes_the_rest(
    app, photos):
  client, token = signed_in(app)
  good = photos[0][1]
  truncated = cv2.imencode('.jpg', np.random.default_rng(0).integers(
      0, 255, (64, 64, 3), np.uint8))[1].tobytes()
  bomb = png(np.zeros((20000, 20000), np.uint8))     # 0.4 MB on disk
  noise = png(np.random.default_rng(1).integers(0, 255, (700, 700, 3),
                                                np.uint8))   # > 1 MB
  assert len(bomb) < 2**20 < len(noise)
  state = upload(client, token, [
      ('good.png', good), ('notes.png', b'field notes, not a photo'),
      ('cut.jpg', truncated[:len(truncated) // 2]), ('bomb.png', bomb),
      ('big.png', noise), ('../../etc/passwd', photos[1][1])])
  reasons = {r['file']: r['reason'] for r in state['refused']}
  assert reasons['notes.png'] == 'not an image, or a truncated one'
  assert 'truncated' in reasons['cut.jpg']
  assert reasons['bomb.png'].startswith('20000 x 20000 pixels is more than')
  assert 'decompression bomb' in reasons['bomb.png']
  assert 'above the upload limit of 1 MB' in reasons['big.png']
  assert state['added'] == 2 and len(reasons) == 4
  with _cat(app) as cat:
    stored = cat.rows('SELECT content_hash, original_path FROM photos '
                      'ORDER BY id')
  # Kept under the content hash; the user's name is only a label.
  assert [r['original_path'] for r in stored] == ['good.png', 'passwd']
  digest = photo_store.hash_bytes(good)
  assert stored[0]['content_hash'] == digest
  assert os.path.exists(f'{app.config["DESK"].catalogue}.photos/'
                        f'{digest[:2]}/{digest}.png')
  again = upload(client, token, [('copy.png', good)])
  assert again['added'] == 0 and len(again['already']) == 1


def test_csv_rows_bad_dates_coordinates_and_unknown_individuals(
    app, photos, embedder):
  client, token = signed_in(app)
  chosen = photos[:5]
  # A landmark beyond the 32 x 32 photo's right edge.
  name, data, identity, points = photos[5]
  chosen.append((name, data, identity, [[40.0, 5.0]] + list(points[1:])))
  # Other bytes (one pixel changed), so that it is not the same photo.
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  image[0, 0] = 255 - image[0, 0]
  chosen.append(('lon.png', png(image), identity, points))
  extra = {
      chosen[0][0]: {'date': '2026-05-01', 'lat': '-8.5', 'lon': '115.2',
                     'location': 'north bay', 'survey': 'S1'},
      chosen[1][0]: {'date': '2026-05-01', 'lat': '', 'lon': ''},
      chosen[2][0]: {'date': '2026-13-01'},
      chosen[3][0]: {'lat': '95'},
      chosen[4][0]: {'individual': 'nobody'},
      'lon.png': {'lat': '-8.5', 'lon': '999'},
  }
  sheet = landmark_csv(chosen + [('IMG_0412.jpg', b'', '', points)],
                       embedder.landmark_names, extra)
  state = upload(client, token, [(n, b) for n, b, _, _ in chosen], sheet)
  reasons = {r['file']: r['reason'] for r in state['refused']}
  assert reasons.pop('CSV') == ("line 9: no photo called 'IMG_0412.jpg' in "
                                'this import: the row was not used')
  assert "date: '2026-13-01' is not a date" in reasons[chosen[2][0]]
  assert 'line 4' in reasons[chosen[2][0]]
  assert 'lat' in reasons[chosen[3][0]] and 'outside' in reasons[chosen[3][0]]
  assert "unknown individual 'nobody'" in reasons[chosen[4][0]]
  assert reasons[chosen[5][0]] == (
      f'CSV line 7: {embedder.landmark_names[0]} at (40, 5) is outside the '
      'photo (32 x 32 pixels)'), reasons
  assert reasons['lon.png'] == "CSV line 8: lon: '999' is outside -180..180"
  assert state['added'] == 2 and len(reasons) == 5
  with _cat(app) as cat:
    rows = {r['original_path']: r for r in cat.rows(
        'SELECT p.*, a.landmarks, a.landmarks_source, l.name AS location '
        'FROM photos p JOIN annotations a ON a.photo_id = p.id LEFT JOIN '
        'locations l ON l.id = p.location_id')}
    first, second = rows[chosen[0][0]], rows[chosen[1][0]]
    assert (first['taken_at'], first['latitude'], first['longitude'],
            first['location']) == ('2026-05-01', -8.5, 115.2, 'north bay')
    assert '"survey": "S1"' in first['extra']
    assert second['latitude'] is None and second['longitude'] is None
    assert first['landmarks_source'] == 'imported'
    embedded = database.embedding(cat, _annotation_of(app, chosen[0][0]),
                                  embedder.fingerprint)
  expected = embedder.embed(chosen[0][1], chosen[0][3])
  np.testing.assert_allclose(embedded, expected, atol=1e-6)


def test_folder_import_stays_inside_the_photo_root(app, photos, tmp_path):
  client, token = signed_in(app)
  folder = tmp_path / 'photos' / 'day1'
  folder.mkdir()
  for name, data, _, _ in photos[:3]:
    (folder / name).write_bytes(data)
  (tmp_path / 'secret.png').write_bytes(photos[3][1])
  for outside in ('..', '../', '/etc', 'day1/../..'):
    response = client.post('/import/folder', data={
        'folder': outside, 'csrf_token': token})
    page = client.get(response.headers['Location']).get_data(as_text=True)
    assert 'is outside the folder the desk may import from' in page or (
        'no such folder' in page), outside
  (folder / 'notes.txt').write_text('field notes')
  response = client.post('/import/folder', data={'folder': 'day1',
                                                 'csrf_token': token})
  state = wait_for_job(client, response.headers['Location'])
  assert state['added'] == 3
  # A file that is not a photo is listed, never silently left out.
  assert state['refused'] == [{'file': 'notes.txt', 'reason': (
      'not a photo (JPEG, PNG, GIF or BMP by its name): not opened')}]
  again = client.post('/import/folder', data={'folder': 'day1',
                                              'csrf_token': token})
  again_state = wait_for_job(client, again.headers['Location'])
  assert again_state['added'] == 0
  assert again_state['already'] == [
      f'{name} (already in the catalogue as photo {k + 1})'
      for k, (name, _, _, _) in enumerate(photos[:3])]
  page = client.get(again.headers['Location']).get_data(as_text=True)
  assert 'Already in the catalogue' in page
  # Two cameras, one file name: two photos, and a CSV row by path matches
  # one; the bare name matches both, so it is used for neither.
  for camera, photo in (('cam1', photos[3]), ('cam2', photos[4])):
    (folder / 'day2' / camera).mkdir(parents=True)
    (folder / 'day2' / camera / 'x.png').write_bytes(photo[1])
  sheet = b'file,date\ncam1/x.png,2026-05-01\nx.png,2026-05-02\n'
  cameras = client.post('/import/folder', data={
      'folder': 'day1/day2', 'csrf_token': token,
      'csv': (io.BytesIO(sheet), 'day2.csv')},
      content_type='multipart/form-data')
  cameras_state = wait_for_job(client, cameras.headers['Location'])
  assert cameras_state['added'] == 2
  assert cameras_state['refused'] == [{'file': 'CSV', 'reason': (
      "line 3: 'x.png' matches 2 photos (cam1/x.png, cam2/x.png): write its "
      'path in the imported folder in the file column; the row was not '
      'used')}]
  with _cat(app) as cat:
    dates = {r['original_path']: r['taken_at'] for r in cat.rows(
        'SELECT original_path, taken_at FROM photos')}
  assert (dates['cam1/x.png'], dates['cam2/x.png']) == ('2026-05-01', None)
  with _cat(app) as cat:
    assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 5
    # No landmarks in a CSV: the predictor set them, and each was embedded.
    sources = [r[0] for r in cat.execute(
        'SELECT landmarks_source FROM annotations')]
  assert sources == ['predicted'] * 5


def test_annotate_sets_clicked_landmarks_and_re_embeds(app, imported, photos,
                                                       embedder):
  client, token = imported
  annotation_id = _annotation_of(app, photos[0][0])
  with _cat(app) as cat:
    before = database.embedding(cat, annotation_id, embedder.fingerprint)
  moved = [[p[0] + 2, p[1] - 1] if p else None for p in photos[0][3]]
  moved[-1] = None   # "not visible"
  saved = client.post(f'/annotate/{annotation_id}', json={'landmarks': moved},
                      headers={security.CSRF_HEADER: token})
  assert saved.status_code == 200, saved.get_json()
  with _cat(app) as cat:
    shown = database.annotation(cat, annotation_id)
    after = database.embedding(cat, annotation_id, embedder.fingerprint)
  assert shown['landmarks_source'] == 'clicked'
  assert shown['landmarks_set_by'] == 'ana'
  np.testing.assert_allclose([p for p in shown['landmarks'] if p],
                             [p for p in moved if p], atol=0.01)
  assert shown['landmarks'][-1] is None
  np.testing.assert_allclose(after, embedder.embed(photos[0][1],
                                                   shown['landmarks']),
                             atol=1e-6)
  assert not np.allclose(before, after)


def test_a_landmark_outside_the_photo_is_refused(app, imported, photos,
                                                 embedder):
  client, token = imported
  annotation_id = _annotation_of(app, photos[0][0])
  outside = [[10.0, 10.0], [40.0, 5.0], None]    # the photo is 32 x 32
  refused = client.post(f'/annotate/{annotation_id}',
                        json={'landmarks': outside},
                        headers={security.CSRF_HEADER: token})
  assert refused.status_code == 400
  name = embedder.landmark_names[1]
  assert refused.get_json()['error'].startswith(
      f'{name} at (40, 5) is outside the photo (32 x 32 pixels)')
  with _cat(app) as cat:
    assert database.annotation(cat, annotation_id)['landmarks_source'] == (
        'imported')


def test_each_decision_and_undo(app, imported, photos, embedder):
  client, token = imported
  a1, a2, b1, b2, c1, c2 = (_annotation_of(app, p[0]) for p in photos)
  assert _decide(client, token, a1, 'new', name='Alpha').status_code == 200
  duplicate = _decide(client, token, b1, 'new', name='Alpha')
  assert duplicate.status_code == 400
  assert "an individual called 'Alpha' already exists" in duplicate.get_json(
  )['error']
  assert _decide(client, token, b1, 'new', name='Bravo').status_code == 200
  page = client.get(f'/match/{a2}').get_data(as_text=True)
  assert 'Alpha' in page and 'Bravo' in page and 'Suggested:' in page
  different = _decide(client, token, a2, 'different',
                      candidate_annotation_id=b1)
  assert different.status_code == 200 and different.get_json()['next'] is None
  same = _decide(client, token, a2, 'same', candidate_annotation_id=a1)
  assert same.get_json()['text'] == 'same as Alpha'
  assert _decide(client, token, c1, 'cannot_tell').status_code == 200
  assert _decide(client, token, c2, 'unidentifiable').status_code == 200
  with _cat(app) as cat:
    recorded = {r['query_annotation_id']: r for r in reviews.history(cat)
                if r['decision'] != 'different'}
    assert database.annotation(cat, a2)['individual'] == 'Alpha'
    assert recorded[a2]['reviewer'] == 'ana'
    assert recorded[a2]['model'] == embedder.fingerprint
    assert recorded[a2]['rank'] >= 1 and recorded[a2]['distance'] >= 0
    assert recorded[c1]['decision'] == 'cannot_tell'
    count = cat.execute('SELECT count(*) FROM reviews').fetchone()[0]
  undone = client.post(f'/match/{a2}/undo', json={},
                       headers={security.CSRF_HEADER: token})
  assert undone.status_code == 200
  with _cat(app) as cat:
    assert database.annotation(cat, a2)['individual_id'] is None
    rows = cat.rows('SELECT decision, supersedes FROM reviews ORDER BY id')
    assert len(rows) == count + 1    # nothing deleted
    assert rows[-1] == {'decision': 'undo',
                        'supersedes': recorded[a2]['id']}
  queue = client.get('/queue').get_data(as_text=True)
  assert f'data-annotation="{a2}"' in queue
  assert f'data-annotation="{a1}"' not in queue


def test_a_decision_and_an_undo_say_what_was_written(app, imported, photos):
  client, token = imported
  a1 = _annotation_of(app, photos[0][0])
  with _cat(app) as cat:
    photo_id = database.annotation(cat, a1)['photo_id']
  answer = _decide(client, token, a1, 'new', name='Alpha').get_json()
  page = client.get(answer['next']).get_data(as_text=True)
  assert (f'Recorded for photo {photo_id}: new individual Alpha. To undo it, '
          'go back to that photo') in page
  match = client.get(f'/match/{a1}')
  # Back in the browser fetches the page again: it shows the decision.
  assert match.headers['Cache-Control'] == 'no-store'
  assert 'Decided by <b>ana</b>' in match.get_data(as_text=True)
  assert client.post(f'/match/{a1}/undo', json={}, headers={
      security.CSRF_HEADER: token}).status_code == 200
  assert 'Undone: new individual Alpha (kept in the history' in client.get(
      f'/match/{a1}').get_data(as_text=True)
  nothing = client.post(f'/match/{a1}/undo', json={}, headers={
      security.CSRF_HEADER: token})
  assert nothing.status_code == 400
  assert 'nothing to undo on this photo' in nothing.get_json()['error']
  assert app.test_client().get('/favicon.ico').status_code == 204


def test_two_reviewers_deciding_one_photo(app, imported, photos):
  ana, ana_token = imported
  bo, bo_token = signed_in(app, 'bo')
  a1, a2 = _annotation_of(app, photos[0][0]), _annotation_of(app,
                                                             photos[1][0])
  _decide(ana, ana_token, a1, 'new', name='Alpha')
  # Both opened a2 while it was undecided (replaces=None), ana decides first.
  assert _decide(ana, ana_token, a2, 'same', candidate_annotation_id=a1,
                 replaces=None).status_code == 200
  late = _decide(bo, bo_token, a2, 'new', name='Other', replaces=None)
  assert late.status_code == 409
  message = late.get_json()['error']
  assert 'already decided by ana' in message and 'same as Alpha' in message
  assert late.get_json()['decided_by'] == 'ana'
  with _cat(app) as cat:
    assert database.annotation(cat, a2)['individual'] == 'Alpha'
    assert cat.row("SELECT count(*) AS n FROM individuals WHERE name = "
                   "'Other'")['n'] == 0
  assert 'Decided by <b>ana</b>' in bo.get(f'/match/{a2}').get_data(
      as_text=True)


def test_names_and_notes_are_shown_as_text(app, imported, photos):
  client, token = imported
  a1, a2 = _annotation_of(app, photos[0][0]), _annotation_of(app,
                                                             photos[1][0])
  _decide(client, token, a1, 'new', name=XSS)
  with _cat(app) as cat:
    individual_id = database.individual(cat, XSS)['id']
  client.post(f'/individual/{individual_id}/notes', data={
      'name': XSS, 'notes': '<img src=x onerror=alert(2)>',
      'csrf_token': token})
  for path in (f'/individual/{individual_id}', '/individuals',
               f'/match/{a2}', f'/match/{a1}'):
    page = client.get(path).get_data(as_text=True)
    assert XSS not in page and '<img src=x' not in page, path
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in page or (
        '\\u003cscript\\u003e' in page), path


def _alpha_twice_and_bravo(app, client, token, photos) -> tuple:
  """Decides the first three photos: a new Alpha, the same Alpha again, a
  new Bravo; returns their annotation ids."""
  a1, a2, b1 = (_annotation_of(app, p[0]) for p in photos[:3])
  _decide(client, token, a1, 'new', name='Alpha')
  _decide(client, token, a2, 'same', candidate_annotation_id=a1)
  _decide(client, token, b1, 'new', name='Bravo')
  return a1, a2, b1


def test_a_rename_or_split_to_a_name_in_use_is_refused(app, imported,
                                                       photos):
  client, token = imported
  a1, a2, b1 = _alpha_twice_and_bravo(app, client, token, photos)
  with _cat(app) as cat:
    alpha = database.individual(cat, 'Alpha')['id']
    bravo = database.individual(cat, 'Bravo')['id']
  renamed = client.post(f'/individual/{bravo}/notes', data={
      'name': 'Alpha', 'notes': 'kept?', 'csrf_token': token})
  assert renamed.status_code == 400
  assert ("an individual called &#39;Alpha&#39; already exists"
          in renamed.get_data(as_text=True))
  split = client.post(f'/individual/{alpha}/split', data={
      'annotation': [a2], 'name': 'Bravo', 'csrf_token': token})
  assert split.status_code == 400
  assert 'already exists' in split.get_data(as_text=True)
  with _cat(app) as cat:
    assert database.individual(cat, bravo)['name'] == 'Bravo'
    assert database.individual(cat, bravo)['notes'] == ''
    assert database.annotation(cat, a2)['individual'] == 'Alpha'


def test_a_batch_above_the_request_limit_is_refused_with_a_message(
    tmp_path, embedder):
  app = make_app(tmp_path, embedder, max_upload_mb=0.01)
  client, token = signed_in(app)
  limit = app.config['MAX_CONTENT_LENGTH']
  response = client.post('/import/upload', data={
      'csrf_token': token, 'photos': [(io.BytesIO(b'x' * (limit + 1)),
                                       'huge.png')]},
      content_type='multipart/form-data')
  assert response.status_code == 413
  assert 'larger than the desk takes at once' in response.get_data(
      as_text=True)
  with _cat(app) as cat:
    assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 0


def test_merge_shows_both_sides_refuses_itself_and_split(app, imported,
                                                         photos):
  client, token = imported
  a1, a2, b1 = (_annotation_of(app, p[0]) for p in photos[:3])
  _decide(client, token, a1, 'new', name='Alpha')
  _decide(client, token, a2, 'new', name='Alpha-dup')
  _decide(client, token, b1, 'same', candidate_annotation_id=a1)
  with _cat(app) as cat:
    alpha = database.individual(cat, 'Alpha')['id']
    dup = database.individual(cat, 'Alpha-dup')['id']
  itself = client.post(f'/individual/{alpha}/merge',
                       data={'other': alpha, 'csrf_token': token})
  assert itself.status_code == 400
  assert 'cannot merge an individual with itself' in itself.get_data(
      as_text=True)
  preview = client.get(f'/individual/{alpha}/merge?other={dup}').get_data(
      as_text=True)
  with _cat(app) as cat:
    assert database.annotation(cat, a2)['individual'] == 'Alpha-dup'
    photo_of = {a: database.annotation(cat, a)['photo_id'] for a in
                (a1, a2, b1)}
  kept_side, absorbed_side = preview.split('id="absorbed"')
  assert f'/photo/{photo_of[a1]}' in kept_side
  assert f'/photo/{photo_of[b1]}' in kept_side
  assert f'/photo/{photo_of[a2]}' in absorbed_side
  assert client.post(f'/individual/{alpha}/merge', data={
      'other': dup, 'csrf_token': token}).status_code == 302
  with _cat(app) as cat:
    assert database.annotation(cat, a2)['individual'] == 'Alpha'
    assert database.individual(cat, dup)['merged_into'] == alpha
  split = client.post(f'/individual/{alpha}/split', data={
      'annotation': [b1], 'name': 'Bravo', 'csrf_token': token})
  with _cat(app) as cat:
    assert database.annotation(cat, b1)['individual'] == 'Bravo'
    assert database.annotation(cat, a1)['individual'] == 'Alpha'
  bravo_page = client.get(split.headers['Location']).get_data(as_text=True)
  assert '<h1 id="individual-name">Bravo' in bravo_page   # a redirect
  # The history in words, with names and photo numbers.
  assert '<td>split off from Alpha (1 photo)</td>' in bravo_page
  assert '<td>created as Bravo</td>' in bravo_page
  alpha_page = client.get(f'/individual/{alpha}').get_data(as_text=True)
  assert '<td>Alpha-dup merged in (1 photo)</td>' in alpha_page
  assert '<td>1 photo split off to Bravo</td>' in alpha_page
  assert '<td>created as Alpha</td>' in alpha_page
  assert f'<td>photo {photo_of[b1]} assigned here</td>' in alpha_page


def test_export_sightings_and_capture_history(app, imported, photos):
  client, token = imported
  a1, a2, b1 = _alpha_twice_and_bravo(app, client, token, photos)
  with _cat(app) as cat:
    for annotation_id, day in ((a1, '2026-05-01'), (a2, '2026-05-03'),
                               (b1, '2026-05-03')):
      cat.execute('UPDATE photos SET taken_at = ? WHERE id = ?', (
          day, database.annotation(cat, annotation_id)['photo_id']))
  response = client.get('/export/sightings.csv')
  assert response.headers['Content-Disposition'].startswith('attachment')
  rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
  by_annotation = {int(r['annotation']): r for r in rows}
  assert by_annotation[a2]['individual'] == 'Alpha'
  assert by_annotation[a2]['matched_by'] == 'same'
  assert by_annotation[a2]['reviewer'] == 'ana'
  assert by_annotation[b1]['matched_by'] == 'new'
  assert by_annotation[a1]['date'] == '2026-05-01'
  history = client.get('/export/capture_history.csv?occasion=day').get_data(
      as_text=True)
  assert history.splitlines() == ['individual,2026-05-01,2026-05-03',
                                  'Alpha,1,1', 'Bravo,0,1']
  inp = client.get('/export/capture_history.inp?occasion=day').get_data(
      as_text=True)
  assert '/* Alpha */ 11 1;' in inp and '/* Bravo */ 01 1;' in inp
  assert client.get('/export/other.csv').status_code == 404


def test_a_public_host_needs_accounts_and_passwords(tmp_path, embedder):
  with pytest.raises(ValueError, match='needs reviewer accounts'):
    make_app(tmp_path, embedder, host='0.0.0.0')
  accounts = str(tmp_path / 'accounts.json')
  security.add_account(accounts, 'ana', 'manta rays')
  assert 'manta rays' not in open(accounts).read()
  app = make_app(tmp_path, embedder, host='0.0.0.0', accounts=accounts)
  client = app.test_client()
  token = token_of(client.get('/sign-in').get_data(as_text=True))
  wrong = client.post('/sign-in', data={'name': 'ana', 'password': 'rays',
                                        'csrf_token': token})
  assert wrong.status_code == 400
  assert 'wrong password' in wrong.get_data(as_text=True)
  assert client.get('/queue').status_code == 302
  right = client.post('/sign-in', data={'name': 'ana',
                                        'password': 'manta rays',
                                        'csrf_token': token})
  assert right.status_code == 302
  assert client.get('/queue').status_code == 200
  assert security.is_loopback('::1') and not security.is_loopback('0.0.0.0')

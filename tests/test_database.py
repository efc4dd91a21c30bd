"""The catalogue database: schema, upgrades, photos, decisions, undo,
merge/split, candidates, and what concurrent writers and kills leave."""

import itertools
import sqlite3

import numpy as np
import pytest

from lmid_tf.identification import database
from lmid_tf.identification import embedding_cache
from lmid_tf.identification import identities
from lmid_tf.identification import reviews
from lmid_tf.identification import schema
from lmid_tf.identification import search


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
  ticks = itertools.count()
  monkeypatch.setattr(database, 'clock',
                      lambda: f'2026-05-01T10:00:{next(ticks):02d}.000000Z')


@pytest.fixture
def cat(tmp_path):
  with database.open(str(tmp_path / 'c.sqlite')) as opened:
    yield opened


def _annotated(cat, name, vector=None, viewpoint=None, model='m', **photo):
  photo_id, _ = database.add_photo(cat, f'hash-{name}', f'{name}.jpg',
                                   viewpoint=viewpoint, **photo)
  annotation_id = database.add_annotation(cat, photo_id)
  if vector is not None:
    database.set_embedding(cat, annotation_id, model, vector)
  return annotation_id


def _known(cat, name, individual, vector, viewpoint=None):
  annotation_id = _annotated(cat, name, vector, viewpoint)
  try:
    individual_id = database.individual(cat, individual)['id']
  except database.NotFound:
    individual_id = identities.create_individual(cat, individual, 'ana')
  identities.assign(cat, annotation_id, individual_id, 'ana')
  return annotation_id, individual_id


def test_a_new_file_is_at_the_current_version_in_wal_mode(cat):
  assert schema.version(cat.connection) == schema.CURRENT_VERSION == 3
  assert cat.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
  assert cat.execute('PRAGMA foreign_keys').fetchone()[0] == 1
  with pytest.raises(sqlite3.IntegrityError):   # a photo that does not exist
    cat.execute("INSERT INTO annotations (photo_id, created_at) "
                "VALUES (99, 't')")


def test_reviews_and_identity_events_are_append_only(cat):
  query = _annotated(cat, 'q')
  reviews.record_decision(cat, query, 'new', 'ana', new_name='Stripe')
  for table in ('reviews', 'identity_events'):
    with pytest.raises(sqlite3.IntegrityError, match='append-only'):
      cat.execute(f'UPDATE {table} SET reviewer = "eve"')
    with pytest.raises(sqlite3.IntegrityError, match='append-only'):
      cat.execute(f'DELETE FROM {table}')


def test_upgrade_from_version_1_to_the_current_keeps_the_data(tmp_path):
  path = str(tmp_path / 'old.sqlite')
  old = sqlite3.connect(path, isolation_level=None)
  schema.upgrade(old, target=1)
  old.execute("INSERT INTO photos (content_hash, original_path, added_at) "
              "VALUES ('h', 'a.jpg', 't')")
  old.execute("INSERT INTO annotations (photo_id, created_at) VALUES (1, 't')")
  old.execute("INSERT INTO embeddings VALUES (1, 'm', ?, 't')",
              (np.ones(3, '<f4').tobytes(),))
  assert schema.version(old) == 1
  old.close()
  with database.open(path) as cat:
    assert schema.version(cat.connection) == 3
    assert database.photo(cat, 1)['original_path'] == 'a.jpg'
    np.testing.assert_array_equal(database.embedding(cat, 1, 'm'), [1, 1, 1])
    database.set_embedding(cat, 1, 'm', [2, 2, 2])
    assert cat.rows('SELECT annotation_id FROM search_changes') == [
        {'annotation_id': 1}]
    assert cat.rows('SELECT * FROM nearest') == []
  newer = sqlite3.connect(path, isolation_level=None)
  newer.execute('UPDATE schema_version SET version = 99')
  newer.close()
  with pytest.raises(database.CatalogueError, match='newer than this'):
    database.open(path)


def test_add_photo_dedupes_by_hash_and_keeps_blank_coordinates_empty(cat):
  first = database.add_photo(cat, 'abc', 'a.jpg', latitude='', longitude=' ',
                             taken_at='2026-05-01', location='North bay')
  assert first == (1, True)
  assert database.add_photo(cat, 'abc', 'elsewhere/a.jpg') == (1, False)
  row = database.photo(cat, 1)
  assert row['latitude'] is None and row['longitude'] is None
  assert (row['location'], row['taken_at']) == ('North bay', '2026-05-01')
  with pytest.raises(database.InvalidInput, match='lat.*outside -90..90'):
    database.add_photo(cat, 'x', 'x.jpg', latitude='91')
  with pytest.raises(database.InvalidInput, match="date: '2026-13-01'"):
    database.add_photo(cat, 'y', 'y.jpg', taken_at='2026-13-01')
  assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 1


def test_landmarks_are_checked_and_new_ones_drop_the_embedding(cat):
  photo_id, _ = database.add_photo(cat, 'h', 'a.jpg', width=40, height=30)
  with pytest.raises(database.InvalidInput, match='landmark 1 at .* outside'):
    database.add_annotation(cat, photo_id, landmarks=[[1, 1], [41, 2]],
                            source='clicked', set_by='ana')
  annotation_id = database.add_annotation(
      cat, photo_id, landmarks=[[1, 1], None], source='predicted',
      set_by='model')
  database.set_embedding(cat, annotation_id, 'm', [1, 0])
  database.set_landmarks(cat, annotation_id, [[2, 3], [4, 5]], 'clicked',
                         'ana')
  row = database.annotation(cat, annotation_id)
  assert row['landmarks'] == [[2, 3], [4, 5]]
  assert (row['landmarks_source'], row['landmarks_set_by']) == ('clicked',
                                                                'ana')
  assert database.embedding(cat, annotation_id, 'm') is None


def test_same_assigns_the_candidates_individual_and_logs_it(cat):
  known, stripe = _known(cat, 'k', 'Stripe', [0, 0])
  query = _annotated(cat, 'q', [0, 1])
  decided = reviews.record_decision(cat, query, 'same', 'bob',
                                    candidate_annotation_id=known, model='m',
                                    distance=1.0, rank=1, threshold=0.5)
  assert decided['candidate_individual_id'] == stripe
  assert (decided['decision'], decided['reviewer'], decided['rank'],
          decided['distance'], decided['threshold']) == ('same', 'bob', 1,
                                                         1.0, 0.5)
  assert database.annotation(cat, query)['individual'] == 'Stripe'
  assert reviews.queue(cat) == []
  [event] = identities.events(cat, annotation_id=query)
  assert (event['kind'], event['review_id'], event['reviewer']) == (
      'assign', decided['id'], 'bob')


def test_new_creates_the_individual_and_refuses_a_duplicate_name(cat):
  _known(cat, 'k', 'Stripe', [0, 0])
  query = _annotated(cat, 'q', [0, 1])
  with pytest.raises(database.DuplicateName, match="'Stripe' already"):
    reviews.record_decision(cat, query, 'new', 'bob', new_name=' Stripe ')
  assert cat.execute('SELECT count(*) FROM reviews').fetchone()[0] == 0
  decided = reviews.record_decision(cat, query, 'new', 'bob',
                                    new_name='Spot')
  assert database.annotation(cat, query)['individual'] == 'Spot'
  assert decided['candidate_individual'] == 'Spot'


@pytest.mark.parametrize('decision', ['cannot_tell', 'unidentifiable'])
def test_settling_decisions_leave_the_queue_without_an_identity(cat, decision):
  query = _annotated(cat, 'q', [0, 1])
  other = _annotated(cat, 'o', [0, 2])
  reviews.record_decision(cat, query, decision, 'bob')
  assert database.annotation(cat, query)['individual_id'] is None
  assert [r['annotation_id'] for r in reviews.queue(cat)] == [other]
  assert reviews.current_decision(cat, query)['decision'] == decision


def test_different_is_a_note_that_settles_nothing(cat):
  known, stripe = _known(cat, 'k', 'Stripe', [0, 0])
  query = _annotated(cat, 'q', [0, 1])
  note = reviews.record_decision(cat, query, 'different', 'bob',
                                 candidate_annotation_id=known)
  assert note['candidate_individual_id'] == stripe
  assert reviews.current_decision(cat, query) is None
  assert [r['annotation_id'] for r in reviews.queue(cat)] == [query]
  # a decision after it needs no `replaces`
  reviews.record_decision(cat, query, 'new', 'bob', new_name='Spot')


def test_undo_supersedes_and_restores(cat):
  known, _ = _known(cat, 'k', 'Stripe', [0, 0])
  query = _annotated(cat, 'q', [0, 1])
  same = reviews.record_decision(cat, query, 'same', 'bob',
                                 candidate_annotation_id=known)
  undone = reviews.undo(cat, same['id'], 'carl', reason='wrong flank')
  assert (undone['decision'], undone['supersedes'], undone['reviewer']) == (
      'undo', same['id'], 'carl')
  assert database.annotation(cat, query)['individual_id'] is None
  assert [r['annotation_id'] for r in reviews.queue(cat)] == [query]
  assert [r['id'] for r in reviews.history(cat, query)] == [undone['id'],
                                                            same['id']]
  with pytest.raises(database.AlreadyDecided, match='already undone by carl'):
    reviews.undo(cat, same['id'], 'dora')
  with pytest.raises(database.InvalidInput, match='cannot be undone'):
    reviews.undo(cat, undone['id'], 'dora')
  # An undone "new" frees its name: the individual had no other photo.
  new = reviews.record_decision(cat, query, 'new', 'bob', new_name='Spot')
  reviews.undo(cat, new['id'], 'bob')
  spot = database.individual(cat, new['candidate_individual_id'])
  assert spot['retired_at'] is not None
  assert [i['name'] for i in identities.individuals(cat)] == ['Stripe']
  reviews.record_decision(cat, query, 'new', 'bob', new_name='Spot')
  assert database.check_consistency(cat) == []


def test_changing_a_decision_needs_the_one_that_was_seen(cat):
  known, stripe = _known(cat, 'k', 'Stripe', [0, 0])
  query = _annotated(cat, 'q', [0, 1])
  first = reviews.record_decision(cat, query, 'same', 'bob',
                                  candidate_annotation_id=known)
  changed = reviews.record_decision(cat, query, 'new', 'bob', new_name='Spot',
                                    replaces=first['id'])
  assert changed['supersedes'] == first['id']
  assert changed['previous_individual_id'] is None
  assert database.annotation(cat, query)['individual'] == 'Spot'
  with pytest.raises(database.AlreadyDecided, match='new individual Spot'):
    reviews.record_decision(cat, query, 'same', 'eve',
                            candidate_individual_id=stripe,
                            replaces=first['id'])


def test_a_second_reviewer_is_told_who_decided_and_nothing_is_lost(tmp_path):
  path = str(tmp_path / 'c.sqlite')
  with database.open(path) as alice, database.open(path) as bob:
    known, stripe = _known(alice, 'k', 'Stripe', [0, 0])
    query = _annotated(alice, 'q', [0, 1])
    # both load the match page while the query is undecided
    assert [r['annotation_id'] for r in reviews.queue(bob)] == [query]
    won = reviews.record_decision(alice, query, 'same', 'alice',
                                  candidate_individual_id=stripe)
    with pytest.raises(database.AlreadyDecided) as refused:
      reviews.record_decision(bob, query, 'new', 'bob', new_name='Spot')
    assert str(refused.value).startswith(
        f'annotation {query} was already decided by alice at '
        f'{won["decided_at"]}: same as Stripe')
    assert refused.value.review['id'] == won['id']
    assert [i['name'] for i in identities.individuals(bob)] == ['Stripe']
    assert len(reviews.history(bob)) == 1


def test_merge_moves_every_photo_and_refuses_itself(cat):
  a1, a = _known(cat, 'a1', 'A', [0, 0])
  a2, _ = _known(cat, 'a2', 'A', [0, 1])
  b1, b = _known(cat, 'b1', 'B', [5, 0])
  query = _annotated(cat, 'q', [5, 1])
  same = reviews.record_decision(cat, query, 'same', 'bob',
                                 candidate_individual_id=b)
  with pytest.raises(database.InvalidInput, match='with itself'):
    identities.merge(cat, a, a, 'bob')
  assert identities.merge(cat, a, b, 'bob', reason='same scar') == [b1, query]
  assert sorted(r['annotation_id'] for r in identities.photos_of(cat, a)) == [
      a1, a2, b1, query]
  gone = database.individual(cat, b)
  assert (gone['merged_into'], gone['retired_at'] is not None) == (a, True)
  with pytest.raises(database.InvalidInput, match='retired'):
    identities.merge(cat, a, b, 'bob')
  # "same as B" now means A: a new decision against B goes to A, and its
  # undo still works.
  assert identities.live(cat, b) == a
  reviews.undo(cat, same['id'], 'bob')
  assert database.annotation(cat, query)['individual_id'] is None
  assert [i['name'] for i in identities.individuals(cat)] == ['A']
  assert database.check_consistency(cat) == []


def test_split_moves_the_chosen_photos_to_a_new_individual(cat):
  a1, a = _known(cat, 'a1', 'A', [0, 0])
  a2, _ = _known(cat, 'a2', 'A', [0, 1])
  a3, _ = _known(cat, 'a3', 'A', [0, 2])
  _, b = _known(cat, 'b1', 'B', [5, 0])
  with pytest.raises(database.InvalidInput, match='at least one photo'):
    identities.split(cat, a, [a1, a2, a3], 'C', 'bob')
  with pytest.raises(database.InvalidInput, match='are not photos of'):
    identities.split(cat, b, [a1], 'C', 'bob')
  with pytest.raises(database.DuplicateName):
    identities.split(cat, a, [a3], 'B', 'bob')
  c = identities.split(cat, a, [a3, a2], 'C', 'bob', reason='two animals')
  assert [r['annotation_id'] for r in identities.photos_of(cat, c)] == [a2, a3]
  assert [r['annotation_id'] for r in identities.photos_of(cat, a)] == [a1]
  kinds = [e['kind'] for e in identities.events(cat, individual_id=c)]
  assert kinds == ['create', 'split']
  with pytest.raises(database.DuplicateName):
    identities.rename(cat, c, 'A', 'bob')
  identities.rename(cat, c, 'Comet', 'bob')
  assert database.individual(cat, 'Comet')['id'] == c


def test_candidates_rank_individuals_within_the_viewpoint(cat):
  _known(cat, 'a1', 'A', [0, 0], 'left')
  _known(cat, 'a2', 'A', [0, 0.2], 'left')
  _known(cat, 'b1', 'B', [0, 0.5], 'right')
  _known(cat, 'c1', 'C', [0, 3], None)
  query = _annotated(cat, 'q', [0, 0.4], 'left')
  _annotated(cat, 'u', [0, 0.41], 'left')     # no individual: not a candidate
  found = search.candidates(cat, query, 'm', top_k=3)
  assert [(r['rank'], r['individual'], round(r['distance'], 4))
          for r in found] == [(1, 'A', 0.2), (2, 'C', 2.6)]
  anywhere = search.candidates(cat, query, 'm', top_k=2,
                               same_viewpoint=False)
  assert [r['individual'] for r in anywhere] == ['B', 'A']
  assert search.candidates(cat, query, 'm', top_k=3,
                           approximate=True) == found
  _known(cat, 'd1', 'D', [0, 0.45], 'left')    # the index grows with it
  assert search.candidates(cat, query, 'm', top_k=1, approximate=True)[0][
      'individual'] == 'D'
  assert anywhere[0]['distance'] == pytest.approx(0.1, abs=1e-6)


def test_search_turns_approximate_at_the_size_threshold(cat, monkeypatch):
  _known(cat, 'a1', 'A', [0, 0])
  _known(cat, 'b1', 'B', [0, 2])
  query = _annotated(cat, 'q', [0, 0.5])

  def store():
    return embedding_cache.view(cat, 'm').store

  monkeypatch.setattr(search, 'APPROXIMATE_FROM', 4)   # 3 embeddings: exact
  assert [r['individual'] for r in search.candidates(cat, query, 'm')] == [
      'A', 'B']
  assert store().approximate is None
  _annotated(cat, 'u', [0, 9])                         # 4: approximate
  assert [r['individual'] for r in search.candidates(cat, query, 'm')] == [
      'A', 'B']
  assert store().approximate.index.ntotal == 4
  assert search.candidates(cat, query, 'm', approximate=False) == (
      search.candidates(cat, query, 'm'))


def test_candidates_see_changes_made_by_another_connection(tmp_path):
  path = str(tmp_path / 'c.sqlite')
  with database.open(path) as web, database.open(path) as other:
    _known(web, 'a1', 'A', [0, 0])
    query = _annotated(web, 'q', [0, 1])
    assert search.candidates(web, query, 'm')[0]['individual'] == 'A'
    _known(other, 'b1', 'B', [0, 0.9])
    assert search.candidates(web, query, 'm')[0]['individual'] == 'B'


def test_queue_by_confidence_puts_the_nearest_match_first(cat):
  _known(cat, 'a1', 'A', [0, 0])
  far = _annotated(cat, 'far', [0, 3], taken_at='2026-01-01')
  near = _annotated(cat, 'near', [0, 1], taken_at='2026-02-01')
  undated = _annotated(cat, 'undated', [0, 2])
  assert [r['annotation_id'] for r in reviews.queue(cat, 'date')] == [
      far, near, undated]
  assert search.refresh_nearest(cat, 'm') == 3
  by_confidence = reviews.queue(cat, 'confidence', model='m')
  assert [r['annotation_id'] for r in by_confidence] == [near, undated, far]
  assert by_confidence[0]['nearest_distance'] == pytest.approx(1.0)


def test_approximate_search_recall_at_10_against_exact():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(2000, 32)).astype(np.float32)
  matrix = centres[rng.integers(0, 2000, 20000)] + 0.3 * rng.normal(
      size=(20000, 32)).astype(np.float32)
  queries = centres[rng.integers(0, 2000, 200)] + 0.3 * rng.normal(
      size=(200, 32)).astype(np.float32)
  _, truth = search.exact_search(matrix, search.squared_norms(matrix),
                                 queries, 10)
  for kind in ('ivf', 'hnsw'):
    index = search.ApproximateIndex(matrix, kind, probes=64)
    _, found = index.search(queries, 10)
    assert search.recall_at_k(found, truth) >= 0.99, kind
  assert search.recall_at_k(truth[:, ::-1], truth) == 1.0
  assert search.recall_at_k(truth[:, :5].repeat(2, 1), truth) == 0.5


def _live_rows(view):
  return {int(view.annotation_ids[g]): (view.matrix[g].tolist(),
                                         int(view.individuals[g]),
                                         int(view.viewpoints[g]))
          for g in np.flatnonzero(view.alive)}


def test_the_cached_matrix_is_patched_to_what_a_full_load_gives(tmp_path):
  path = str(tmp_path / 'c.sqlite')
  with database.open(path) as web, database.open(path) as other:
    a1, a = _known(web, 'a1', 'A', [0, 0], 'left')
    query = _annotated(web, 'q', [0, 1], 'left')
    embedding_cache.view(web, 'm')
    changes = [
        lambda: _known(other, 'b1', 'B', [0, 0.9], 'right'),
        lambda: reviews.record_decision(other, query, 'same', 'bob',
                                        candidate_individual_id=a),
        lambda: database.set_embedding(other, a1, 'm', [0.5, 0.5]),
        lambda: database.set_landmarks(other, query, [[1, 1]], 'clicked',
                                       'bob'),
        lambda: database.set_viewpoint(other, 1, 'right'),
        lambda: database.set_embedding(other, query, 'm', [0, 2]),
    ]
    for change in changes:
      change()
      patched = embedding_cache.view(web, 'm')
      full = embedding_cache._full(web, 'm', patched.version)
      codes = {v: k for k, v in full.viewpoint_codes.items()}
      names = {v: k for k, v in patched.viewpoint_codes.items()}
      assert {k: (v, i, codes[p]) for k, (v, i, p) in _live_rows(
          full).items()} == {k: (v, i, names[p]) for k, (v, i, p) in
                             _live_rows(patched).items()}
    assert len(patched.annotation_ids) > len(full.annotation_ids)  # appended
    assert [r['individual'] for r in search.candidates(
        web, query, 'm', same_viewpoint=False)] == ['B', 'A']

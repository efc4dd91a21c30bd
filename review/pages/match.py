"""The review queue and the match page, where decisions are made.

Each decision is one database transaction (reviews.record_decision), with
the reviewer, the model, the candidate's distance and rank, and the
threshold shown. The page sends what it saw (`replaces`: the decision it
showed, or none): if another reviewer decided meanwhile, nothing is written
and the page says who decided what, and when.
"""

import math

import flask

from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import database
from lmid_tf.identification import reviews
from lmid_tf.identification import search
from review import compute
from review import context
from review import security

blueprint = flask.Blueprint('match', __name__)
queue_blueprint = flask.Blueprint('queue', __name__)
ORDERS = ('confidence', 'date')
PAGE = 50


def _order() -> str:
  order = flask.request.args.get('order') or flask.session.get(
      'order', 'confidence')
  return order if order in ORDERS else 'confidence'


@queue_blueprint.route('/queue')
def queue():
  cat, model = context.catalogue(), context.current().model
  order = _order()
  flask.session['order'] = order
  offset = max(0, flask.request.args.get('offset', 0, type=int))
  waiting = reviews.queue(cat, order, model, PAGE, offset)
  if _refresh_missing(cat, model, waiting):
    waiting = reviews.queue(cat, order, model, PAGE, offset)
  names = {r['id']: r['name'] for r in cat.rows(
      'SELECT id, name FROM individuals')}
  for row in waiting:
    row['nearest_individual'] = names.get(row['nearest_individual_id'])
  total = _waiting_count(cat)
  return flask.render_template(
      'queue.html', title='Review queue', waiting=waiting, order=order,
      offset=offset, page=PAGE, total=total,
      threshold=_finite(database.threshold(cat, model)))


def _refresh_missing(cat, model, waiting) -> int:
  """Finds the nearest individual of waiting photos that have none yet
  (embedded since the last import); returns how many it found."""
  missing = [w['annotation_id'] for w in waiting
             if w['nearest_distance'] is None and
             database.embedding(cat, w['annotation_id'], model) is not None]
  return search.refresh_nearest(cat, model, missing) if missing else 0


def _waiting_count(cat) -> int:
  return cat.execute(
      "SELECT count(*) FROM annotations a WHERE a.individual_id IS NULL AND "
      "NOT EXISTS (SELECT 1 FROM reviews r WHERE r.query_annotation_id = a.id"
      " AND r.decision IN ('same', 'new', 'cannot_tell', 'unidentifiable') "
      "AND NOT EXISTS (SELECT 1 FROM reviews s WHERE s.supersedes = r.id))"
  ).fetchone()[0]


def _finite(value):
  return value if value is not None and math.isfinite(value) else None


def _shown(cat, annotation_id: int) -> dict:
  """What the page needs to draw one photo with its landmarks."""
  annotation = database.annotation(cat, annotation_id)
  photo = database.photo(cat, annotation['photo_id'])
  return {'annotation_id': annotation_id, 'photo_id': photo['id'],
          'url': flask.url_for('photo', photo_id=photo['id']),
          'width': photo['width'], 'height': photo['height'],
          'landmarks': annotation['landmarks'] or [],
          'source': annotation['landmarks_source'] or '',
          'file': photo['original_path'], 'taken_at': photo['taken_at'],
          'location': photo['location'], 'viewpoint': photo['viewpoint'],
          'individual': annotation['individual'],
          'individual_id': annotation['individual_id']}


def _next_in_queue(cat, model, after: int):
  for row in reviews.queue(cat, _order(), model, 2):
    if row['annotation_id'] != after:
      return flask.url_for('match.match', annotation_id=row['annotation_id'])
  return flask.url_for('queue.queue')


@blueprint.route('/match/<int:annotation_id>')
def match(annotation_id):
  cat, the_desk = context.catalogue(), context.current()
  model = the_desk.model
  query = _shown(cat, annotation_id)
  vector = compute.ensure_embedding(
      cat, the_desk.embedder, annotation_id,
      lambda: context.photo_bytes(database.photo(cat, query['photo_id'])))
  if vector is None:
    flask.flash('This photo needs its landmarks before it can be matched.',
                'warning')
    return flask.redirect(flask.url_for('annotate.photo',
                                        annotation_id=annotation_id))
  query = _shown(cat, annotation_id)   # predicted landmarks, if just found
  found = search.candidates(cat, annotation_id, model, the_desk.config.top_k,
                            approximate=the_desk.config.approximate)
  candidates = []
  for hit in found:
    shown = _shown(cat, hit['annotation_id'])
    shown.update(rank=hit['rank'], distance=hit['distance'],
                 individual=hit['individual'],
                 individual_id=hit['individual_id'],
                 individual_url=flask.url_for(
                     'individuals.individual', individual_id=hit[
                         'individual_id']))
    candidates.append(shown)
  threshold = database.threshold(cat, model)
  suggestion = catalogue_lib.verdict(
      [(c['individual'], c['distance'], i) for i, c in enumerate(candidates)],
      threshold)
  decided = reviews.current_decision(cat, annotation_id)
  history = reviews.history(cat, annotation_id, limit=20)
  for row in history:
    row['text'] = reviews.describe(row)
  page = {'query': query, 'candidates': candidates,
          'names': list(the_desk.embedder.landmark_names),
          'threshold': _finite(threshold),
          'decided': decided and {'id': decided['id'],
                                  'text': reviews.describe(decided),
                                  'reviewer': decided['reviewer'],
                                  'at': decided['decided_at']},
          'decide': flask.url_for('match.decide', annotation_id=annotation_id),
          'undo': flask.url_for('match.undo', annotation_id=annotation_id),
          'next': _next_in_queue(cat, model, annotation_id)}
  return flask.render_template(
      'match.html', title=f'Match photo {query["photo_id"]}', page=page,
      query=query, candidates=candidates, suggestion=suggestion,
      decided=page['decided'], history=history)


@blueprint.route('/match/<int:annotation_id>/decide', methods=['POST'])
def decide(annotation_id):
  cat, model = context.catalogue(), context.current().model
  sent = flask.request.get_json(silent=True) or {}
  decision = sent.get('decision')
  candidate = sent.get('candidate_annotation_id')
  distance = rank = None
  if candidate is not None:
    # Distance and rank as the search sees them now, not as the page says.
    config = context.current().config
    for hit in search.candidates(cat, annotation_id, model, config.top_k,
                                 approximate=config.approximate):
      if hit['annotation_id'] == candidate:
        distance, rank = hit['distance'], hit['rank']
  try:
    recorded = reviews.record_decision(
        cat, annotation_id, decision, security.reviewer(),
        candidate_annotation_id=candidate, new_name=sent.get('name'),
        model=model, distance=distance, rank=rank,
        threshold=database.threshold(cat, model),
        replaces=sent.get('replaces'))
  except database.AlreadyDecided as e:
    return flask.jsonify(error=str(e), decided_by=e.review['reviewer']), 409
  except database.CatalogueError as e:
    return flask.jsonify(error=str(e)), 400
  text = reviews.describe(recorded)
  if decision != 'different':
    # Shown on the next photo, which the page opens: the reviewer sees what
    # was written, and how to take it back.
    photo_id = database.annotation(cat, annotation_id)['photo_id']
    flask.flash(f'Recorded for photo {photo_id}: {text}. To undo it, go back '
                'to that photo (the browser\'s Back) and press Z.', 'info')
  return flask.jsonify(review=recorded['id'], text=text,
                       next=_next_in_queue(cat, model, annotation_id)
                       if decision != 'different' else None)


@blueprint.route('/match/<int:annotation_id>/undo', methods=['POST'])
def undo(annotation_id):
  cat = context.catalogue()
  sent = flask.request.get_json(silent=True) or {}
  review_id = sent.get('review_id')
  if review_id is None:
    decided = reviews.current_decision(cat, annotation_id)
    if decided is None:
      return flask.jsonify(error='nothing to undo on this photo (to undo '
                           'the previous photo\'s decision, go back to it)'
                           ), 400
    review_id = decided['id']
  try:
    if reviews.review(cat, review_id)['query_annotation_id'] != annotation_id:
      raise database.InvalidInput(f'review {review_id} is not about this '
                                  'photo')
    recorded = reviews.undo(cat, review_id, security.reviewer())
  except database.AlreadyDecided as e:
    return flask.jsonify(error=str(e), decided_by=e.review['reviewer']), 409
  except database.CatalogueError as e:
    return flask.jsonify(error=str(e)), 400
  # The page reloads: this says what happened (the history keeps both).
  flask.flash(f'Undone: {reviews.describe(reviews.review(cat, review_id))} '
              '(kept in the history, marked as undone)', 'info')
  return flask.jsonify(review=recorded['id'], undone=review_id)

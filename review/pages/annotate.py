"""Annotate: click each landmark on the photo in the model's landmark order
(or mark it not visible), drag predicted ones into place, next photo.

Saved landmarks are 'clicked' by the signed-in reviewer; the annotation's
embedding is computed again from them at once.
"""

import flask

from lmid_tf.identification import database
from lmid_tf.identification import values
from review import compute
from review import context
from review import security

blueprint = flask.Blueprint('annotate', __name__)


def _waiting(cat, after: int = 0):
  """The next annotation (by id, after `after`) whose landmarks no person
  has set: none yet, or only the predictor's."""
  found = cat.row(
      "SELECT id FROM annotations WHERE (landmarks_source IS NULL OR "
      "landmarks_source = 'predicted') AND id > ? ORDER BY id LIMIT 1",
      (after,))
  return found['id'] if found else None


@blueprint.route('/annotate')
def next_photo():
  cat = context.catalogue()
  after = flask.request.args.get('after', 0, type=int)
  found = _waiting(cat, after) or (_waiting(cat) if after else None)
  if found is None:
    return flask.render_template(
        'message.html', title='Annotate', message='Every photo has landmarks '
        'set by a reviewer. Import more photos, or open any photo from the '
        'queue or an individual to correct its landmarks.')
  return flask.redirect(flask.url_for('annotate.photo', annotation_id=found))


@blueprint.route('/annotate/<int:annotation_id>')
def photo(annotation_id):
  cat = context.catalogue()
  shown = database.annotation(cat, annotation_id)
  photo_row = database.photo(cat, shown['photo_id'])
  names = context.current().embedder.landmark_names
  landmarks = shown['landmarks'] or [None] * len(names)
  return flask.render_template(
      'annotate.html', title=f'Annotate photo {photo_row["id"]}',
      annotation=shown, photo=photo_row, names=list(names),
      landmarks=landmarks, waiting=_count_waiting(cat))


def _count_waiting(cat) -> int:
  return cat.execute("SELECT count(*) FROM annotations WHERE landmarks_source "
                     "IS NULL OR landmarks_source = 'predicted'").fetchone()[0]


def check_landmarks(landmarks, names, width: int, height: int) -> list:
  """[[x, y] | None] * K as sent by the page; InvalidInput naming the
  landmark that is outside the photo or malformed."""
  if not isinstance(landmarks, list) or len(landmarks) != len(names):
    raise database.InvalidInput(f'expected {len(names)} landmarks '
                                f'({", ".join(names)})')
  try:
    points = values.checked_points(landmarks, width, height, names)
  except database.InvalidInput as e:
    raise database.InvalidInput(
        f'{e}: click on the animal, or mark it not visible') from None
  return [p and [round(p[0], 2), round(p[1], 2)] for p in points]


@blueprint.route('/annotate/<int:annotation_id>', methods=['POST'])
def save(annotation_id):
  cat = context.catalogue()
  shown = database.annotation(cat, annotation_id)
  photo_row = database.photo(cat, shown['photo_id'])
  names = context.current().embedder.landmark_names
  sent = (flask.request.get_json(silent=True) or {}).get('landmarks')
  try:
    points = check_landmarks(sent, names, photo_row['width'],
                             photo_row['height'])
    database.set_landmarks(cat, annotation_id, points, 'clicked',
                           security.reviewer())
  except database.InvalidInput as e:
    return flask.jsonify(error=str(e)), 400
  compute.ensure_embedding(cat, context.current().embedder, annotation_id,
                           lambda: context.photo_bytes(photo_row))
  following = _waiting(cat, annotation_id) or _waiting(cat)
  return flask.jsonify(
      saved=annotation_id,
      next=flask.url_for('annotate.photo', annotation_id=following)
      if following else flask.url_for('queue.queue'))

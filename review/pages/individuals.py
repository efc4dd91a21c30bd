"""Individuals: the list, one individual's photos and sightings timeline,
notes and name, merge (both sides shown before it is confirmed) and split.
Every change is logged with the reviewer (identities.py)."""

import flask

from lmid_tf.identification import database
from lmid_tf.identification import identities
from review import context
from review import security

blueprint = flask.Blueprint('individuals', __name__)


@blueprint.route('/individuals')
def index():
  cat = context.catalogue()
  return flask.render_template('individuals.html', title='Individuals',
                               individuals=identities.individuals(cat))


def _page(individual_id: int, **extra):
  cat = context.catalogue()
  shown = database.individual(cat, individual_id)
  if shown['retired_at'] and shown['merged_into']:
    into = database.individual(cat, shown['merged_into'])
    flask.flash(f'{shown["name"]} was merged into {into["name"]} on '
                f'{shown["retired_at"]}.', 'warning')
  photos = identities.photos_of(cat, individual_id)
  others = [i for i in identities.individuals(cat) if i['id'] != individual_id]
  log = identities.events(cat, individual_id=individual_id)
  for event in log:
    event['text'] = _in_words(cat, event, individual_id)
  return flask.render_template(
      'individual.html', title=shown['name'], individual=shown, photos=photos,
      others=others, events=log, **extra)


@blueprint.route('/individual/<int:individual_id>')
def individual(individual_id):
  return _page(individual_id)


def _in_words(cat, event: dict, shown_id: int) -> str:
  """One line of an individual's history, with names and photo numbers
  (the log itself keeps ids)."""
  def name(individual_id):
    if individual_id is None:
      return 'no individual'
    try:
      return database.individual(cat, individual_id)['name']
    except database.NotFound:
      return f'individual {individual_id}'
  detail, kind = event['detail'] or {}, event['kind']
  count = lambda ids: f'{len(ids)} photo{"" if len(ids) == 1 else "s"}'
  if kind == 'create':
    return f'created as {detail.get("name")}'
  if kind == 'rename':
    return f'renamed from {detail.get("from")} to {detail.get("to")}'
  if kind == 'assign':
    photo = 'a photo'
    if event['annotation_id'] is not None:
      shown = database.annotation(cat, event['annotation_id'])
      photo = f'photo {shown["photo_id"]}'
    if detail.get('to') == shown_id:
      was = (f' (was {name(detail["from"])})' if detail.get('from')
             is not None else '')
      return f'{photo} assigned here{was}'
    return f'{photo} moved to {name(detail.get("to"))}'
  if kind == 'merge':
    moved = count(detail.get('moved') or [])
    if event['individual_id'] == shown_id:
      return f'{detail.get("absorbed_name")} merged in ({moved})'
    return f'merged into {name(event["individual_id"])} ({moved})'
  if kind == 'split':
    moved = count(detail.get('moved') or [])
    if event['individual_id'] == shown_id:
      return f'{moved} split off to {detail.get("new_name")}'
    return f'split off from {name(event["individual_id"])} ({moved})'
  if kind == 'retire':
    return 'retired'
  return kind


def _refused(individual_id, error, status=400):
  flask.flash(str(error), 'error')
  return _page(individual_id), status


@blueprint.route('/individual/<int:individual_id>/notes', methods=['POST'])
def notes(individual_id):
  cat = context.catalogue()
  form = flask.request.form
  try:
    if form.get('name', '').strip():
      identities.rename(cat, individual_id, form['name'], security.reviewer())
    identities.set_notes(cat, individual_id, form.get('notes', ''))
  except database.CatalogueError as e:
    return _refused(individual_id, e)
  flask.flash('Saved.', 'info')
  return flask.redirect(flask.url_for('individuals.individual',
                                      individual_id=individual_id))


def _other(form_value, individual_id):
  if not form_value:
    raise database.InvalidInput('choose the individual to merge with')
  try:
    other = int(form_value)
  except ValueError:
    raise database.InvalidInput(f'{form_value!r} is not an individual') from (
        None)
  if other == individual_id:
    raise database.InvalidInput('cannot merge an individual with itself')
  return other


@blueprint.route('/individual/<int:individual_id>/merge')
def merge_preview(individual_id):
  """Both sides' photos, and which name stays, before anything changes."""
  cat = context.catalogue()
  try:
    other = _other(flask.request.args.get('other'), individual_id)
    absorbed = database.individual(cat, other)
  except database.CatalogueError as e:
    return _refused(individual_id, e)
  kept = database.individual(cat, individual_id)
  return flask.render_template(
      'merge.html', title=f'Merge {absorbed["name"]} into {kept["name"]}',
      kept=kept, absorbed=absorbed,
      kept_photos=identities.photos_of(cat, individual_id),
      absorbed_photos=identities.photos_of(cat, other))


@blueprint.route('/individual/<int:individual_id>/merge', methods=['POST'])
def merge(individual_id):
  cat = context.catalogue()
  try:
    other = _other(flask.request.form.get('other'), individual_id)
    moved = identities.merge(cat, individual_id, other, security.reviewer(),
                             flask.request.form.get('reason', ''))
  except database.CatalogueError as e:
    return _refused(individual_id, e)
  flask.flash(f'Merged: {len(moved)} photo{"" if len(moved) == 1 else "s"} '
              'moved here.', 'info')
  return flask.redirect(flask.url_for('individuals.individual',
                                      individual_id=individual_id))


@blueprint.route('/individual/<int:individual_id>/split', methods=['POST'])
def split(individual_id):
  cat = context.catalogue()
  form = flask.request.form
  try:
    chosen = [int(a) for a in form.getlist('annotation')]
    new_id = identities.split(cat, individual_id, chosen, form.get('name', ''),
                              security.reviewer(), form.get('reason', ''))
  except ValueError as e:   # CatalogueError is one, and so is a bad id
    return _refused(individual_id, e)
  flask.flash(f'Split: {len(chosen)} photo{"" if len(chosen) == 1 else "s"} '
              'moved to this new individual.', 'info')
  return flask.redirect(flask.url_for('individuals.individual',
                                      individual_id=new_id))

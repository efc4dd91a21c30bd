"""Import: a batch of photos uploaded, or a folder on the server, with an
optional CSV of sighting data and landmarks; progress and refusals shown."""

import os

import flask

from review import context
from review import import_jobs
from review import security
from review import sighting_csv

blueprint = flask.Blueprint('imports', __name__)


@blueprint.route('/import')
def import_page():
  config = context.current().config
  return flask.render_template(
      'import.html', title='Import photos',
      photo_root=os.path.realpath(config.photo_root),
      max_upload_mb=config.max_upload_mb,
      landmark_names=context.current().embedder.landmark_names)


def _csv_rows(upload) -> tuple:
  """(rows, problems) of the uploaded CSV, ({}, []) without one."""
  if upload is None or not upload.filename:
    return {}, []
  data = upload.read()
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError:
    raise sighting_csv.BadCsv(f'{upload.filename}: not UTF-8 text') from None
  return sighting_csv.read(text, os.path.basename(upload.filename),
                           context.current().embedder.landmark_names)


def _refuse(message: str):
  flask.flash(message, 'error')
  return flask.redirect(flask.url_for('imports.import_page'))


@blueprint.route('/import/upload', methods=['POST'])
def upload():
  try:
    rows, problems = _csv_rows(flask.request.files.get('csv'))
  except sighting_csv.BadCsv as e:
    return _refuse(f'Nothing imported: {e}')
  items = []
  for file in flask.request.files.getlist('photos'):
    if file.filename:
      # Only the name's last part is kept, as a label: it is never opened.
      name = os.path.basename(file.filename.replace('\\', '/'))
      items.append((name, file.read()))
  if not items:
    return _refuse('Choose one or more photos to upload.')
  job = import_jobs.start(context.current(), items, rows, security.reviewer(),
                          problems)
  return flask.redirect(flask.url_for('imports.job_page', job_id=job.id))


@blueprint.route('/import/folder', methods=['POST'])
def folder():
  config = context.current().config
  try:
    items, skipped = import_jobs.folder_items(
        config.photo_root, flask.request.form.get('folder', ''))
    rows, problems = _csv_rows(flask.request.files.get('csv'))
  except (ValueError, sighting_csv.BadCsv) as e:
    return _refuse(f'Nothing imported: {e}')
  if not items:
    return _refuse('That folder holds no JPEG, PNG, GIF or BMP photos.')
  job = import_jobs.start(context.current(), items, rows, security.reviewer(),
                          problems, skipped)
  return flask.redirect(flask.url_for('imports.job_page', job_id=job.id))


def _job(job_id: str):
  job = context.current().jobs.get(job_id)
  if job is None:
    flask.abort(404)
  return job


@blueprint.route('/import/job/<job_id>')
def job_page(job_id):
  return flask.render_template('import_job.html', title='Importing',
                               job=_job(job_id).state())


@blueprint.route('/import/job/<job_id>.json')
def job_state(job_id):
  return flask.jsonify(_job(job_id).state())

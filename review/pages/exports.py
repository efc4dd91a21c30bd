"""Export: the sightings CSV and the capture history (CSV and Program MARK
.inp), written by lmid_tf.identification.export, the same files as
`identify export`."""

import os
import tempfile

import flask

from lmid_tf.identification import database
from lmid_tf.identification import export
from review import context

blueprint = flask.Blueprint('exports', __name__)
FILES = {'sightings.csv': 'text/csv', 'capture_history.csv': 'text/csv',
         'capture_history.inp': 'text/plain'}


@blueprint.route('/export')
def export_page():
  cat = context.catalogue()
  standard = set(export.SIGHTING_COLUMNS) - {'location'}
  columns = sorted({key for row in export.sightings(cat) for key in row}
                   - standard)
  return flask.render_template('export.html', title='Export', columns=columns,
                               files=list(FILES))


@blueprint.route('/export/<name>')
def download(name):
  if name not in FILES:
    flask.abort(404)
  occasion = flask.request.args.get('occasion', 'day').strip() or 'day'
  with tempfile.TemporaryDirectory() as folder:
    try:
      written = export.export(context.catalogue(), folder, occasion)
    except database.CatalogueError as e:
      flask.flash(str(e), 'error')
      return flask.redirect(flask.url_for('exports.export_page'))
    with open(written['paths'][name], 'rb') as f:
      data = f.read()
  stem, suffix = os.path.splitext(name)
  label = f'{stem}_{occasion}{suffix}' if stem.startswith('capture') else name
  response = flask.make_response(data)
  response.headers['Content-Type'] = f'{FILES[name]}; charset=utf-8'
  response.headers['Content-Disposition'] = f'attachment; filename="{label}"'
  return response

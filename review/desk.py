"""The review desk's Flask app: settings, the catalogue per request, photos.

  app = desk.create_app(desk.DeskConfig(catalogue='season.sqlite',
                                        model='runs/x/export'))

The model is loaded once and shared (review.context.Desk); each request
opens its own catalogue connection (review.context.catalogue).
"""

import dataclasses
import mimetypes
import secrets
import threading

import flask

from lmid_tf.identification import database
from lmid_tf.identification import search
from review import compute
from review import context
from review import security
from review.pages import annotate
from review.pages import exports
from review.pages import imports
from review.pages import individuals
from review.pages import match


@dataclasses.dataclass(frozen=True)
class DeskConfig:
  catalogue: str
  model: str
  host: str = '127.0.0.1'
  port: int = 8765
  max_upload_mb: float = 40.0
  photo_root: str = '.'        # server folders may be imported from here only
  accounts: str = ''           # accounts file (review.accounts)
  top_k: int = 5
  search: str = 'auto'         # auto | exact | approximate (search.py)
  secret_key: str = ''         # '' -> random per start (sessions end)

  @property
  def accounts_required(self) -> bool:
    return not security.is_loopback(self.host)

  @property
  def max_upload_bytes(self) -> int:
    return int(self.max_upload_mb * 2**20)

  @property
  def approximate(self):
    """search.rank_vector's `approximate`: None chooses by size."""
    return search.SEARCH_MODES[self.search]


def create_app(config: DeskConfig, embedder=None,
               backfill: bool = True) -> flask.Flask:
  """The desk; `embedder` (review.embedder.Embedder) is loaded from
  config.model when not given. `backfill` embeds, in a thread, the photos
  that have no embedding of this model yet."""
  if embedder is None:
    from review import embedder as embedder_lib
    embedder = embedder_lib.Embedder(config.model)
  if config.accounts_required and not security.read_accounts(
      config.accounts):
    raise ValueError(f'--host={config.host} is not loopback: the desk then '
                     'needs reviewer accounts (--accounts=FILE, made with '
                     '`python -m review.accounts add NAME --accounts=FILE`)')
  database.open(config.catalogue).close()   # creates / upgrades it now
  if backfill:
    threading.Thread(target=compute.backfill, daemon=True, args=(
        config.catalogue, embedder,
        lambda cat, photo: context.photo_bytes(photo, cat))).start()
  app = flask.Flask(__name__)
  app.config.update(
      DESK=config, SECRET_KEY=config.secret_key or secrets.token_hex(32),
      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE='Lax',
      # A batch of photos: many files, each checked against the limit.
      MAX_CONTENT_LENGTH=config.max_upload_bytes * 64 + 2**20,
      MAX_FORM_MEMORY_SIZE=config.max_upload_bytes + 2**20)
  app.extensions['desk'] = context.Desk(config, embedder)
  security.install(app)
  for page in (imports, annotate, match, individuals, exports):
    app.register_blueprint(page.blueprint)
  app.register_blueprint(match.queue_blueprint)

  @app.after_request
  def _fresh_pages(response):
    # The browser's Back must show a photo as it is now (decided, and by
    # whom), not a cached page that would offer to decide it again.
    if response.mimetype == 'text/html':
      response.headers['Cache-Control'] = 'no-store'
    return response

  @app.teardown_appcontext
  def _close(_):
    found = flask.g.pop('catalogue', None)
    if found is not None:
      found.close()

  @app.errorhandler(database.NotFound)
  def _not_found(error):
    return _message('Not found', str(error), 404)

  @app.errorhandler(database.CatalogueError)
  def _refused(error):
    return _message('Refused', str(error), 400)

  @app.errorhandler(413)
  def _too_large(_):
    return _message('Too large', 'The upload is larger than the desk takes '
                    f'at once ({config.max_upload_mb:g} MB per photo, '
                    '64 photos per batch): send fewer photos at a time, or '
                    'import a folder on the server.', 413)

  @app.errorhandler(500)
  def _broken(_):
    return _message('Something went wrong', 'The desk could not finish this '
                    'request; nothing was half-written (each change is one '
                    'database transaction). The server log has the details.',
                    500)

  @app.route('/photo/<int:photo_id>')
  def photo(photo_id):
    path = context.photo_path(database.photo(context.catalogue(), photo_id))
    kind = mimetypes.guess_type(path)[0] or 'application/octet-stream'
    return flask.send_file(path, mimetype=kind, max_age=86400)

  @app.route('/favicon.ico')
  def favicon():
    return '', 204   # none: the browser stops asking (and logging a 404)

  @app.route('/')
  def home():
    return flask.redirect(flask.url_for('queue.queue'))

  return app


def _message(title: str, message: str, status: int):
  wants_json = (flask.request.is_json or 'application/json' in
                flask.request.headers.get('Accept', ''))
  if wants_json:
    return flask.jsonify(error=message), status
  return flask.render_template('message.html', title=title, message=message,
                               back=flask.request.referrer), status

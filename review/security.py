"""Who is reviewing, and that each POST comes from our own page.

On loopback (the default) a reviewer types a name once; it is kept in the
signed session cookie and written on every decision. On any other host the
desk requires accounts: `python -m review.accounts add NAME --accounts=F`
writes a password hash (werkzeug.security) into a JSON file, and the desk
only serves signed-in reviewers.

Every POST carries the session's CSRF token, in the form field `csrf_token`
or the `X-CSRF-Token` header (our fetch() calls); one without it is refused
with 400 before any view runs.
"""

import hmac
import ipaddress
import json
import os
import secrets

import flask
from werkzeug import security as hashing

CSRF_FIELD = 'csrf_token'
CSRF_HEADER = 'X-CSRF-Token'
# Pages a visitor who has not said who they are may still see.
OPEN_ENDPOINTS = ('security.sign_in', 'static', 'favicon')


def is_loopback(host: str) -> bool:
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def csrf_token() -> str:
  if CSRF_FIELD not in flask.session:
    flask.session[CSRF_FIELD] = secrets.token_urlsafe(32)
  return flask.session[CSRF_FIELD]


def reviewer() -> str:
  return flask.session.get('reviewer', '')


# ---- accounts ---------------------------------------------------------------

def read_accounts(path: str) -> dict:
  """{name: password hash} from an accounts file; {} when there is none."""
  if not path or not os.path.exists(path):
    return {}
  with open(path) as f:
    accounts = json.load(f)
  if not isinstance(accounts, dict):
    raise ValueError(f'{path}: expected a JSON object of name: hash')
  return accounts


def add_account(path: str, name: str, password: str) -> None:
  if not name.strip() or not password:
    raise ValueError('an account needs a name and a password')
  accounts = read_accounts(path)
  accounts[name.strip()] = hashing.generate_password_hash(password)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(accounts, f, indent=1)
  os.chmod(tmp, 0o600)
  os.replace(tmp, path)


def password_matches(accounts: dict, name: str, password: str) -> bool:
  stored = accounts.get(name)
  if stored is None:
    # The same work as a real check, so timing does not tell who exists.
    hashing.check_password_hash(hashing.generate_password_hash('x'),
                                password)
    return False
  return hashing.check_password_hash(stored, password)


# ---- wiring -----------------------------------------------------------------

blueprint = flask.Blueprint('security', __name__)


def install(app: flask.Flask) -> None:
  """CSRF check and sign-in gate on every request; token and reviewer in
  every template."""
  app.register_blueprint(blueprint)

  @app.before_request
  def _gate():
    if flask.request.method == 'POST':
      sent = (flask.request.headers.get(CSRF_HEADER) or
              flask.request.form.get(CSRF_FIELD, ''))
      expected = flask.session.get(CSRF_FIELD, '')
      if not expected or not hmac.compare_digest(sent, expected):
        return flask.render_template(
            'message.html', title='Refused',
            message='This form has expired or did not come from the desk '
                    '(missing CSRF token). Reload the page and try again.'
        ), 400
    if not reviewer() and flask.request.endpoint not in OPEN_ENDPOINTS:
      if flask.request.method == 'POST' or flask.request.is_json:
        return flask.jsonify(error='sign in first'), 401
      return flask.redirect(flask.url_for('security.sign_in',
                                          next=flask.request.path))

  @app.context_processor
  def _values():
    return {'csrf_token': csrf_token, 'reviewer': reviewer()}


@blueprint.route('/sign-in', methods=['GET', 'POST'])
def sign_in():
  config = flask.current_app.config['DESK']
  accounts_needed = config.accounts_required
  error = ''
  if flask.request.method == 'POST':
    name = flask.request.form.get('name', '').strip()
    if not name:
      error = 'Type your name: it is written on every decision you make.'
    elif len(name) > 80:
      error = 'A name of at most 80 characters, please.'
    elif accounts_needed and not password_matches(
        read_accounts(config.accounts), name,
        flask.request.form.get('password', '')):
      error = 'Unknown name or wrong password.'
    else:
      token = flask.session.get(CSRF_FIELD)
      flask.session.clear()
      flask.session[CSRF_FIELD] = token or secrets.token_urlsafe(32)
      flask.session['reviewer'] = name
      target = flask.request.args.get('next', '')
      # Only our own paths: never an open redirect to another site.
      if not target.startswith('/') or target.startswith('//'):
        target = flask.url_for('queue.queue')
      return flask.redirect(target)
  return flask.render_template('sign_in.html', error=error,
                               accounts_needed=accounts_needed), (
                                   400 if error else 200)


@blueprint.route('/sign-out', methods=['POST'])
def sign_out():
  flask.session.clear()
  return flask.redirect(flask.url_for('security.sign_in'))

"""What a request of the desk reaches: the shared Desk (settings, model,
import jobs), this request's catalogue connection, and photo files.

Each request opens its own connection (database.open is cheap; SQLite
serialises the writers), closed when the request ends, so a page never sees
half of another reviewer's decision.
"""

import flask

from lmid_tf.identification import database
from lmid_tf.identification import photo_store


class Desk:
  """What every request shares: the settings, the model, import jobs."""

  def __init__(self, config, embedder):   # config: desk.DeskConfig
    self.config = config
    self.embedder = embedder
    self.jobs = {}

  @property
  def model(self) -> str:
    return self.embedder.fingerprint


def current() -> Desk:
  return flask.current_app.extensions['desk']


def catalogue() -> database.Catalogue:
  """This request's connection (closed when the request ends)."""
  if 'catalogue' not in flask.g:
    flask.g.catalogue = database.open(current().config.catalogue)
  return flask.g.catalogue


def photo_path(photo: dict, cat=None) -> str:
  """A catalogued photo's file: its copy under its content hash, or for
  photos imported on the command line, where they were imported from."""
  path = photo_store.photo_file(cat or catalogue(), photo)
  if path is None:
    raise database.NotFound(f'photo {photo["id"]}: its file is missing '
                            f'({photo["original_path"]})')
  return path


def photo_bytes(photo: dict, cat=None) -> bytes:
  with open(photo_path(photo, cat), 'rb') as f:
    return f.read()

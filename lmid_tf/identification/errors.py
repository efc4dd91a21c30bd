"""The catalogue's errors: each message is fit to show a person."""


class CatalogueError(ValueError):
  """Bad input or a refused change; the message says which and why."""


class NotFound(CatalogueError):
  pass


class DuplicateName(CatalogueError):
  pass


class InvalidInput(CatalogueError):
  pass


class AlreadyDecided(CatalogueError):
  """Another reviewer decided first; `review` is their decision (a dict)."""

  def __init__(self, message: str, review: dict):
    super().__init__(message)
    self.review = review

"""Checked sighting values: dates, coordinates, landmarks, text.

Blank means unknown and becomes None (never 0.0); anything else must be
valid or InvalidInput names the field and the value.
"""

import datetime
import json
import math

from lmid_tf.identification.errors import InvalidInput


def blank(value) -> bool:
  return value is None or (isinstance(value, str) and not value.strip()) or (
      isinstance(value, float) and math.isnan(value))


def parse_date(value, field: str = 'date'):
  """ISO 8601 date or date-time text -> the same text; blank -> None."""
  if blank(value):
    return None
  text = str(value).strip()
  try:
    if len(text) == 10:
      datetime.date.fromisoformat(text)
    else:
      datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
  except ValueError:
    raise InvalidInput(f'{field}: {text!r} is not a date (YYYY-MM-DD or '
                       'YYYY-MM-DDTHH:MM:SS)') from None
  return text


def parse_coordinate(value, field: str, limit: float):
  """A latitude (limit 90) or longitude (180); blank -> None, never 0.0."""
  if blank(value):
    return None
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise InvalidInput(f'{field}: {value!r} is not a number') from None
  if not math.isfinite(number) or abs(number) > limit:
    raise InvalidInput(f'{field}: {value!r} is outside -{limit:g}..{limit:g}')
  return number


def text(value):
  return None if blank(value) else str(value).strip()


def checked_points(landmarks, width, height, names=()) -> list:
  """[[x, y] | None, ...] in photo pixels, as floats; InvalidInput names
  the landmark (by `names`, else by index) that is malformed or outside the
  photo."""
  points = []
  for k, point in enumerate(landmarks):
    label = names[k] if k < len(names) else f'landmark {k}'
    if point is None:
      points.append(None)
      continue
    try:
      x, y = (float(v) for v in point)
    except (TypeError, ValueError):
      raise InvalidInput(f'{label}: {point!r} is not an (x, y) '
                         'pair') from None
    if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0 or (
        width and x > width) or (height and y > height):
      raise InvalidInput(f'{label} at ({x:.0f}, {y:.0f}) is outside the '
                         f'photo ({width} x {height} pixels)')
    points.append([x, y])
  return points


def check_landmarks(landmarks, width, height):
  """[[x, y] | None, ...] in photo pixels -> its JSON (checked_points)."""
  if landmarks is None:
    return None
  return json.dumps(checked_points(landmarks, width, height))

"""What a season's review produces: sightings and a capture history.

`sightings.csv`: one row per annotation (identified or not) with the photo,
its individual, the sighting data (date, location, lat, lon, viewpoint, and
every further column imported with the photo), and how the identity was
set: `matched_by` (`same` / `new` for a review, `imported`, `assigned`, or a
settling decision `cannot_tell` / `unidentifiable`), by whom, when, at what
distance, with which model. Unknown values are empty cells, never 0.

`capture_history.csv` and `.inp`: live individuals x occasions, 1 where the
individual was seen in the occasion. Occasions are days, ISO weeks, months,
or the values of any sightings column, in sorted order. Program MARK reads
the `.inp` (one `/* name */ 0101 1;` line per individual).
"""

import csv
import datetime
import io
import json
import os

from lmid_tf import files
from lmid_tf.identification.database import Catalogue, InvalidInput

SIGHTING_COLUMNS = ('annotation', 'photo', 'individual', 'date', 'location',
                    'lat', 'lon', 'viewpoint', 'matched_by', 'reviewer',
                    'decided_at', 'distance', 'model')
OCCASIONS = ('day', 'week', 'month')


def _settled(cat: Catalogue) -> dict:
  """annotation id -> its active settling review (cannot_tell, ...)."""
  return {r['query_annotation_id']: r for r in cat.rows(
      "SELECT r.* FROM reviews r WHERE r.decision IN ('cannot_tell', "
      "'unidentifiable') AND NOT EXISTS (SELECT 1 FROM reviews s WHERE "
      's.supersedes = r.id)')}


def _cell(value):
  return '' if value is None else value


def sightings(cat: Catalogue, individual_id=None) -> list:
  """[{column: value}] one per annotation (of one individual, or all),
  ordered by date (undated last) then annotation; values are text or
  numbers, '' when unknown."""
  where = 'WHERE a.individual_id = ?' if individual_id is not None else ''
  rows = cat.rows(
      'SELECT a.id AS annotation, p.original_path AS photo, i.name AS '
      'individual, p.taken_at AS date, l.name AS location, p.latitude AS lat,'
      ' p.longitude AS lon, p.viewpoint, p.extra, e.reason AS event_reason, '
      'e.reviewer AS event_reviewer, e.at AS event_at, r.decision, '
      'r.reviewer, r.decided_at, r.distance, r.model FROM annotations a '
      'JOIN photos p ON p.id = a.photo_id '
      'LEFT JOIN individuals i ON i.id = a.individual_id '
      'LEFT JOIN locations l ON l.id = p.location_id '
      "LEFT JOIN (SELECT annotation_id, max(id) AS id FROM identity_events "
      "WHERE kind = 'assign' GROUP BY annotation_id) last "
      'ON last.annotation_id = a.id '
      'LEFT JOIN identity_events e ON e.id = last.id '
      'LEFT JOIN reviews r ON r.id = e.review_id '
      f'{where} ORDER BY p.taken_at IS NULL, p.taken_at, a.id',
      () if individual_id is None else (individual_id,))
  settled = _settled(cat) if individual_id is None else {}
  out = []
  for row in rows:
    extra = json.loads(row.pop('extra'))
    how = dict(matched_by=None, reviewer=None, decided_at=None,
               distance=None, model=None)
    if row['individual'] is not None and row['decision'] is not None:
      how.update(matched_by=row['decision'], reviewer=row['reviewer'],
                 decided_at=row['decided_at'], distance=row['distance'],
                 model=row['model'])
    elif row['individual'] is not None:
      how.update(matched_by='imported' if row['event_reason'] == 'import'
                 else 'assigned', reviewer=row['event_reviewer'],
                 decided_at=row['event_at'])
    elif row['annotation'] in settled:
      review = settled[row['annotation']]
      how.update(matched_by=review['decision'], reviewer=review['reviewer'],
                 decided_at=review['decided_at'], model=review['model'])
    sighting = {c: _cell(row.get(c)) for c in SIGHTING_COLUMNS[:8]}
    sighting.update({k: _cell(v) for k, v in how.items()})
    for key, value in extra.items():
      if key not in sighting:
        sighting[key] = _cell(value)
    out.append(sighting)
  columns = {k for r in out for k in r}   # every row has every column
  return [{**dict.fromkeys(sorted(columns - r.keys()), ''), **r} for r in out]


def _csv_text(header: list, rows: list) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue()


def write_sightings_csv(rows: list, path: str) -> None:
  extra = sorted({k for r in rows for k in r} - set(SIGHTING_COLUMNS))
  header = list(SIGHTING_COLUMNS) + extra
  files.write_text(path, _csv_text(header, [[r.get(c, '') for c in header]
                                            for r in rows]), newline='')


def occasion_of(sighting: dict, occasion: str):
  """The occasion a sighting falls in ('' when its value is unknown)."""
  if occasion in OCCASIONS:
    date = str(sighting['date'])
    if not date:
      return ''
    if occasion == 'day':
      return date[:10]
    if occasion == 'month':
      return date[:7]
    year, week, _ = datetime.date.fromisoformat(date[:10]).isocalendar()
    return f'{year}-W{week:02d}'
  return str(sighting.get(occasion, ''))


def capture_history(rows: list, occasion: str = 'day') -> tuple:
  """(occasions [sorted], {individual: [0/1 per occasion]}, skipped: how
  many identified sightings had no value for the occasion)."""
  if occasion not in OCCASIONS and not any(occasion in r for r in rows):
    raise InvalidInput(f'occasion {occasion!r}: day, week, month or a '
                       'sightings column')
  seen, skipped = {}, 0
  for row in rows:
    if row['individual'] == '':
      continue
    when = occasion_of(row, occasion)
    if when == '':
      skipped += 1
      continue
    seen.setdefault(row['individual'], set()).add(when)
  occasions = sorted(set().union(*seen.values())) if seen else []
  history = {name: [int(o in when) for o in occasions]
             for name, when in sorted(seen.items())}
  return occasions, history, skipped


def mark_inp(occasions: list, history: dict, occasion: str) -> str:
  """Program MARK's encounter-history input: one line per individual."""
  safe = lambda text: str(text).replace('*/', '* /')
  lines = [f'/* lmid-tf capture history: {len(occasions)} occasions '
           f'({safe(occasion)}): {safe(" ".join(occasions))} */']
  for name, row in history.items():
    lines.append(f'/* {safe(name)} */ {"".join(map(str, row))} 1;')
  return '\n'.join(lines) + '\n'


def export(cat: Catalogue, out_dir: str, occasion: str = 'day') -> dict:
  """Writes sightings.csv, capture_history.csv and capture_history.inp
  into `out_dir` (each by temp file + rename). Returns counts and paths."""
  os.makedirs(out_dir, exist_ok=True)
  rows = sightings(cat)
  occasions, history, skipped = capture_history(rows, occasion)
  paths = {name: os.path.join(out_dir, name) for name in (
      'sightings.csv', 'capture_history.csv', 'capture_history.inp')}
  write_sightings_csv(rows, paths['sightings.csv'])
  files.write_text(paths['capture_history.csv'], _csv_text(
      ['individual'] + occasions,
      [[name] + row for name, row in history.items()]), newline='')
  files.write_text(paths['capture_history.inp'],
                mark_inp(occasions, history, occasion), newline='')
  return {'sightings': len(rows), 'individuals': len(history),
          'occasions': len(occasions), 'skipped': skipped, 'paths': paths}

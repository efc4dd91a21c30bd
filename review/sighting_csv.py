"""The optional CSV beside an import: sighting data and landmarks per photo.

Columns (any subset, any order; names are case-insensitive):
  file | path | photo            the photo's file name, or its path in the
                                imported folder (match_rows)
  date | taken_at               YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS
  location, lat | latitude, lon | longitude, viewpoint | side,
  photographer | camera
  individual | identity         an individual already in the catalogue
  <landmark>_x, <landmark>_y    pixels, for the model's landmark names;
                                both empty: not visible
Any other column is kept as extra sighting data. Values are checked where
they are stored (database.add_photo), so a bad date or lat/lon is refused
there with the field named, and a blank lat/lon stays empty.
"""

import csv
import io

ALIASES = {'file': 'file', 'path': 'file', 'photo': 'file',
           'date': 'taken_at', 'taken_at': 'taken_at',
           'location': 'location', 'lat': 'latitude', 'latitude': 'latitude',
           'lon': 'longitude', 'lng': 'longitude', 'longitude': 'longitude',
           'viewpoint': 'viewpoint', 'side': 'viewpoint',
           'photographer': 'photographer', 'camera': 'photographer',
           'individual': 'individual', 'identity': 'individual'}


class BadCsv(ValueError):
  pass


def read(text: str, source: str, landmark_names: tuple) -> tuple:
  """(rows, problems): rows {file (as written, '/' separators): {'line',
  'fields' (add_photo
  keywords), 'landmarks' (None or [[x, y] | None] * K), 'individual' (or
  None), 'error' (a row that cannot be read: its photo is refused with it)}},
  problems [messages about rows that name no photo]. BadCsv for a header
  the desk cannot use."""
  reader = csv.DictReader(io.StringIO(text))
  header = [h.strip().lower() for h in reader.fieldnames or []]
  if 'file' not in {ALIASES.get(h) for h in header}:
    raise BadCsv(f'{source}: no file column (header: {",".join(header)}); '
                 'name the photo column file, path or photo')
  lower = [n.lower() for n in landmark_names]
  given = [n for n in lower if f'{n}_x' in header and f'{n}_y' in header]
  if given and len(given) != len(lower):
    missing = [n for n in landmark_names if n.lower() not in given]
    raise BadCsv(f'{source}: landmark columns for {", ".join(missing)} '
                 'are missing (each landmark needs _x and _y)')
  rows, problems = {}, []
  for line, raw in enumerate(reader, start=2):
    row = {k.strip().lower(): (v or '').strip() for k, v in raw.items()
           if k is not None}
    fields, extra = {}, {}
    for key, value in row.items():
      alias = ALIASES.get(key)
      if alias:
        fields[alias] = value
      elif not any(key in (f'{n}_x', f'{n}_y') for n in lower) and value:
        extra[key] = value
    name = fields.pop('file', '').replace('\\', '/').strip('/')
    if not name:
      problems.append(f'{source} line {line}: empty file name')
      continue
    if name in rows:
      problems.append(f'{source} line {line}: {name} is also on line '
                      f'{rows[name]["line"]}; the first row is used')
      continue
    landmarks, error = None, None
    if given:
      landmarks = []
      for n in lower:
        x, y = row.get(f'{n}_x', ''), row.get(f'{n}_y', '')
        if not x and not y:
          landmarks.append(None)
          continue
        try:
          landmarks.append([float(x), float(y)])
        except ValueError:
          error = (f'{source} line {line}: {n}_x, {n}_y = {x!r}, {y!r} is '
                   'not a pair of numbers (leave both empty when not '
                   'visible)')
    individual = fields.pop('individual', '') or None
    fields['extra'] = extra
    rows[name] = {'line': line, 'fields': fields, 'landmarks': landmarks,
                  'individual': individual, 'error': error}
  return rows, problems


def match_rows(names: list, rows: dict) -> tuple:
  """({photo name: its row}, problems) for the photos `names` of one import
  (file names, or paths inside the imported folder). A row matches a photo
  by the whole path, else by file name when just one photo and one row have
  that file name: two photos camera1/IMG_1.JPG and camera2/IMG_1.JPG never
  share a row. Every row left unused, or matching several photos, is a
  problem."""
  base = lambda name: name.rsplit('/', 1)[-1]
  photos_by_base, rows_by_base = {}, {}
  for name in names:
    photos_by_base.setdefault(base(name), []).append(name)
  for key in rows:
    rows_by_base.setdefault(base(key), []).append(key)
  matched, used = {}, set()
  for name in names:
    key = name if name in rows else None
    candidates = rows_by_base.get(base(name), [])
    if key is None and len(candidates) == 1 and len(
        photos_by_base[base(name)]) == 1:
      key = candidates[0]
    if key is not None:
      matched[name] = rows[key]
      used.add(key)
  problems = []
  for key, row in rows.items():
    if key in used:
      continue
    several = photos_by_base.get(base(key), [])
    if len(several) > 1:
      problems.append(
          f'line {row["line"]}: {key!r} matches {len(several)} photos '
          f'({", ".join(several)}): write its path in the imported folder '
          'in the file column; the row was not used')
    else:
      problems.append(f'line {row["line"]}: no photo called {key!r} in this '
                      'import: the row was not used')
  return matched, problems

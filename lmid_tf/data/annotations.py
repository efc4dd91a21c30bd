"""Reading annotation files (CSV or COCO keypoints JSON) into one row format.

Rows that cannot be read are returned as rejects with a reason and a location
naming the file and line (CSV) or annotation index (COCO); they never stop the
reading of the rest. The converter reads training annotations with it; the
identification and serving tools read the landmarks of photos to embed,
where no identity column is needed (`identity_field=''`).

Column names are the user's: `path_field` and `identity_field` name the image
path and identity columns (COCO: fields of the annotation or its image), and
every `<name>_x`, `<name>_y` pair is a landmark. A file with no landmark
columns is identity-only (K = 0), as most re-identification collections are.

Optional, per annotation (CSV column / COCO field of the annotation or its
image):
  box_x0, box_y0, box_x1, box_y1   the animal's box in photo pixels (COCO:
                                   `bbox` [x, y, width, height]); several
                                   rows may share one photo
  viewpoint                        e.g. left / right / top
  encounter                        photos taken together (same place and
                                   time); or `date` + `location`, from which
                                   the encounter is made (same location, same
                                   day)
"""

import csv
import dataclasses
import json
import math
import os
import re
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Annotation:
  where: str          # 'file.csv:12' or 'file.json:annotations[3]'
  path: str           # image path as written in the file
  identity: str       # '' when the file has no identities (query photos)
  # One (x, y) in pixels per landmark, or None when not visible.
  points: tuple
  split: Optional[str] = None
  box: Optional[tuple] = None   # (x0, y0, x1, y1) photo pixels; None: whole
  viewpoint: str = ''
  encounter: str = ''


@dataclasses.dataclass(frozen=True)
class Reject:
  where: str
  path: str
  reason: str
  kept: bool = False    # a note: the row is converted, but worth a look


class AnnotationError(ValueError):
  """The annotation file as a whole cannot be used (not a single row)."""


DEFAULT_PATH_FIELD = 'path'
COCO_PATH_FIELD = 'file_name'


def read(path: str, identity_field: str = 'identity', split_field: str = '',
         landmark_names: Sequence[str] = (), path_field: str = '') -> tuple:
  """Reads a CSV or COCO JSON file.

  Args:
    identity_field: column holding the identity; '' reads files without one
      (every row's identity is then '').
    path_field: column holding the image path; '' means 'path' for CSV and
      the image's 'file_name' for COCO.

  Returns:
    (landmark_names, annotations, rejects)
  """
  if not os.path.exists(path):
    raise AnnotationError(f'{path}: annotation file not found')
  if path.lower().endswith('.json'):
    return _read_coco(path, identity_field, split_field, landmark_names,
                      path_field or COCO_PATH_FIELD)
  return _read_csv(path, identity_field, split_field, landmark_names,
                   path_field or DEFAULT_PATH_FIELD)


def _parse_coordinate(text: str, where: str, field: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f'non-numeric coordinate {field}={text!r}') from None
  if not math.isfinite(value):
    raise ValueError(f'NaN or infinite coordinate {field}={text!r}')
  return value


BOX_COLUMNS = ('box_x0', 'box_y0', 'box_x1', 'box_y1')


def encounter_of(encounter, date, location) -> str:
  """An explicit encounter, else 'location@day' from a date (its day part:
  '2024-03-01 14:05' and '2024-03-01T14:05' are the day 2024-03-01)."""
  if encounter not in (None, ''):
    return str(encounter).strip()
  if date in (None, '') or location in (None, ''):
    return ''
  day = re.split(r'[ T]', str(date).strip(), maxsplit=1)[0]
  return f'{str(location).strip()}@{day}'


def _optional_fields(get) -> dict:
  """box, viewpoint, encounter of one annotation; `get(name)` returns the
  field's value or None. Raises ValueError on a malformed box."""
  box = None
  values = [get(c) for c in BOX_COLUMNS]
  if any(v not in (None, '') for v in values):
    if any(v in (None, '') for v in values):
      raise ValueError('incomplete box: give all of ' + ', '.join(BOX_COLUMNS))
    box = tuple(_parse_coordinate(str(v), '', c)
                for v, c in zip(values, BOX_COLUMNS))
  return {'box': box,
          'viewpoint': str(get('viewpoint') or '').strip(),
          'encounter': encounter_of(get('encounter'), get('date'),
                                    get('location'))}


def _read_csv(path, identity_field, split_field, landmark_names, path_field):
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      raise AnnotationError(f'{path}: empty file') from None
    names = [h[:-2] for h in header if h.endswith('_x')]
    for required, flag in ((path_field, '--path_field'),
                           (identity_field, '--identity_field')):
      if required and required not in header:
        raise AnnotationError(f'{path}:1: header has no {required!r} column '
                              f'(header: {",".join(header)}); name the column '
                              f'with {flag}')
    if split_field and split_field not in header:
      raise AnnotationError(f'{path}:1: header has no split column '
                            f'{split_field!r}')
    if landmark_names:
      missing = [n for n in landmark_names if n not in names]
      if missing:
        raise AnnotationError(f'{path}:1: header has no columns for landmarks '
                              f'{missing} (found {names})')
      names = list(landmark_names)
    for n in names:
      if f'{n}_y' not in header:
        raise AnnotationError(f'{path}:1: column {n}_x has no {n}_y')
    column = {h: i for i, h in enumerate(header)}

    rows, rejects = [], []
    for line, fields in enumerate(reader, start=2):
      where = f'{path}:{line}'
      if not fields or all(not f.strip() for f in fields):
        continue
      image_path = fields[column[path_field]].strip() if len(fields) > column[
          path_field] else ''
      if len(fields) != len(header):
        rejects.append(Reject(
            where, image_path,
            f'wrong landmark count: {len(fields)} fields, the header has '
            f'{len(header)} ({len(names)} landmarks)'))
        continue
      try:
        points = []
        for n in names:
          x, y = fields[column[f'{n}_x']].strip(), fields[column[f'{n}_y']].strip()
          flag = fields[column[f'{n}_visible']].strip() if (
              f'{n}_visible' in column) else ''
          if flag in ('0', 'false', 'False'):
            points.append(None)
          elif not x and not y:
            if flag in ('1', 'true', 'True'):
              raise ValueError(f'landmark {n} marked visible but has no '
                               'coordinates')
            points.append(None)
          else:
            points.append((_parse_coordinate(x, where, f'{n}_x'),
                           _parse_coordinate(y, where, f'{n}_y')))
      except ValueError as e:
        rejects.append(Reject(where, image_path, str(e)))
        continue
      try:
        extra = _optional_fields(
            lambda c: fields[column[c]].strip() if c in column else None)
      except ValueError as e:
        rejects.append(Reject(where, image_path, str(e)))
        continue
      split = fields[column[split_field]].strip() if split_field else None
      identity = fields[column[identity_field]].strip() if (
          identity_field) else ''
      rows.append(Annotation(where, image_path, identity, tuple(points),
                             split, **extra))
  return tuple(names), rows, rejects


def _read_coco(path, identity_field, split_field, landmark_names, path_field):
  try:
    with open(path, encoding='utf-8') as f:
      coco = json.load(f)
  except json.JSONDecodeError as e:
    raise AnnotationError(f'{path}:{e.lineno}: not valid JSON: {e.msg}') from None
  for key in ('images', 'annotations', 'categories'):
    if key not in coco:
      raise AnnotationError(f'{path}: COCO file has no {key!r}')
  categories = [c for c in coco['categories'] if c.get('keypoints')]
  # No category with keypoints: an identity-only file (K = 0).
  names = list(categories[0]['keypoints']) if categories else []
  if landmark_names:
    missing = [n for n in landmark_names if n not in names]
    if missing:
      raise AnnotationError(f'{path}: keypoints {missing} not in category '
                            f'keypoints {names}')
  selected = [names.index(n) for n in (landmark_names or names)]
  images = {im['id']: im for im in coco['images']}

  rows, rejects = [], []
  for i, ann in enumerate(coco['annotations']):
    where = f'{path}:annotations[{i}]'
    image = images.get(ann.get('image_id'))
    if image is None:
      rejects.append(Reject(where, '', f'unknown image_id {ann.get("image_id")}'))
      continue
    image_path = str(ann.get(path_field, image.get(path_field, '')))
    identity = ann.get(identity_field, image.get(identity_field)) if (
        identity_field) else ''
    if identity is None:
      rejects.append(Reject(where, image_path,
                            f'no identity field {identity_field!r}'))
      continue
    keypoints = ann.get('keypoints') or []
    if len(keypoints) != 3 * len(names):
      rejects.append(Reject(
          where, image_path,
          f'wrong landmark count: {len(keypoints)} keypoint values, expected '
          f'{3 * len(names)} ({len(names)} landmarks x 3)'))
      continue
    try:
      points = []
      for k in selected:
        x, y, v = keypoints[3 * k:3 * k + 3]
        # COCO v: 0 not labelled, 1 labelled but occluded, 2 visible. An
        # occluded landmark's position is still known, so it is kept.
        if v == 0:
          points.append(None)
        else:
          points.append((_parse_coordinate(str(x), where, f'{names[k]}_x'),
                         _parse_coordinate(str(y), where, f'{names[k]}_y')))
    except ValueError as e:
      rejects.append(Reject(where, image_path, str(e)))
      continue
    split = None
    if split_field:
      split = ann.get(split_field, image.get(split_field))

    def field(name):
      if name in BOX_COLUMNS:
        bbox = ann.get('bbox')
        if not bbox:
          return None
        if len(bbox) != 4:
          raise ValueError(f'bbox {bbox!r} is not [x, y, width, height]')
        x, y, w, h = (float(v) for v in bbox)
        return dict(zip(BOX_COLUMNS, (x, y, x + w, y + h)))[name]
      if name == 'date':
        return ann.get('date', image.get('date', image.get('date_captured')))
      return ann.get(name, image.get(name))

    try:
      extra = _optional_fields(field)
    except (ValueError, TypeError) as e:
      rejects.append(Reject(where, image_path, str(e)))
      continue
    rows.append(Annotation(where, image_path, str(identity), tuple(points),
                           split, **extra))
  return tuple(landmark_names or names), rows, rejects


def landmark_arrays(rows: Sequence[Annotation], num_landmarks: int) -> tuple:
  """Rows -> (points [N, K, 2] pixels, visible [N, K] 0/1) float32.

  Raises ValueError naming the row whose landmark count differs.
  """
  points = np.zeros((len(rows), num_landmarks, 2), np.float32)
  visible = np.zeros((len(rows), num_landmarks), np.float32)
  for i, row in enumerate(rows):
    if len(row.points) != num_landmarks:
      raise ValueError(f'{row.where}: {len(row.points)} landmarks, the model '
                       f'takes {num_landmarks}')
    for k, point in enumerate(row.points):
      if point is not None:
        points[i, k], visible[i, k] = point, 1.0
  return points, visible


def resolve_path(images_root: str, image_path: str) -> str:
  """The file an annotation names, or ValueError when it lies outside
  `images_root` (an annotation file must not make a tool read, say,
  ../../etc/passwd)."""
  root = os.path.realpath(images_root)
  resolved = os.path.realpath(os.path.join(root, image_path))
  if os.path.commonpath([root, resolved]) != root:
    raise ValueError(f'path {image_path!r} resolves outside the images root '
                     f'{root}')
  return resolved


def rows_for_images(annotation_file: str, image_paths: Sequence[str],
                    images_root: str = '', path_field: str = '') -> list:
  """The annotation row of each photo, matched by resolved file path.

  The file needs only a path column and landmark columns (an identity column,
  if any, is ignored). Raises ValueError naming the first photo that has no
  usable row (and why its row was rejected, if it was).
  """
  _, rows, rejects = read(annotation_file, identity_field='',
                          path_field=path_field)
  root = images_root or os.path.dirname(os.path.abspath(annotation_file))
  key = lambda p: os.path.normpath(os.path.join(os.path.abspath(root), p))
  by_path = {key(r.path): r for r in rows}
  matched = []
  for image in image_paths:
    row = by_path.get(os.path.abspath(image))
    if row is None:
      bad = [r for r in rejects if r.path and key(r.path) == os.path.abspath(
          image)]
      reason = f' (its row {bad[0].where} was rejected: {bad[0].reason})' if (
          bad) else ''
      raise ValueError(f'{annotation_file}: no row for photo {image} (rows '
                       f'are matched by path, relative to {root}){reason}')
    matched.append(row)
  return matched

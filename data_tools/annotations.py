"""Reading annotation files (CSV or COCO keypoints JSON) into one row format.

Rows that cannot be read are returned as rejects with a reason and a location
naming the file and line (CSV) or annotation index (COCO); they never stop the
reading of the rest.
"""

import csv
import dataclasses
import json
import math
import os
from typing import Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Annotation:
  where: str          # 'file.csv:12' or 'file.json:annotations[3]'
  path: str           # image path as written in the file
  identity: str
  # One (x, y) in pixels per landmark, or None when not visible.
  points: tuple
  split: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Reject:
  where: str
  path: str
  reason: str


class AnnotationError(ValueError):
  """The annotation file as a whole cannot be used (not a single row)."""


def read(path: str, identity_field: str = 'identity', split_field: str = '',
         landmark_names: Sequence[str] = ()) -> tuple:
  """Reads a CSV or COCO JSON file.

  Returns:
    (landmark_names, annotations, rejects)
  """
  if not os.path.exists(path):
    raise AnnotationError(f'{path}: annotation file not found')
  if path.lower().endswith('.json'):
    return _read_coco(path, identity_field, split_field, landmark_names)
  return _read_csv(path, identity_field, split_field, landmark_names)


def _parse_coordinate(text: str, where: str, field: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f'non-numeric coordinate {field}={text!r}') from None
  if not math.isfinite(value):
    raise ValueError(f'NaN or infinite coordinate {field}={text!r}')
  return value


def _read_csv(path, identity_field, split_field, landmark_names):
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      raise AnnotationError(f'{path}: empty file') from None
    names = [h[:-2] for h in header if h.endswith('_x')]
    for required in ('path', identity_field):
      if required not in header:
        raise AnnotationError(f'{path}:1: header has no {required!r} column '
                              f'(header: {",".join(header)})')
    if split_field and split_field not in header:
      raise AnnotationError(f'{path}:1: header has no split column '
                            f'{split_field!r}')
    if landmark_names:
      missing = [n for n in landmark_names if n not in names]
      if missing:
        raise AnnotationError(f'{path}:1: header has no columns for landmarks '
                              f'{missing} (found {names})')
      names = list(landmark_names)
    if not names:
      raise AnnotationError(f'{path}:1: header has no <landmark>_x columns')
    for n in names:
      if f'{n}_y' not in header:
        raise AnnotationError(f'{path}:1: column {n}_x has no {n}_y')
    column = {h: i for i, h in enumerate(header)}

    rows, rejects = [], []
    for line, fields in enumerate(reader, start=2):
      where = f'{path}:{line}'
      if not fields or all(not f.strip() for f in fields):
        continue
      image_path = fields[column['path']].strip() if len(fields) > column[
          'path'] else ''
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
      split = fields[column[split_field]].strip() if split_field else None
      rows.append(Annotation(where, image_path,
                             fields[column[identity_field]].strip(),
                             tuple(points), split))
  return tuple(names), rows, rejects


def _read_coco(path, identity_field, split_field, landmark_names):
  try:
    with open(path, encoding='utf-8') as f:
      coco = json.load(f)
  except json.JSONDecodeError as e:
    raise AnnotationError(f'{path}:{e.lineno}: not valid JSON: {e.msg}') from None
  for key in ('images', 'annotations', 'categories'):
    if key not in coco:
      raise AnnotationError(f'{path}: COCO file has no {key!r}')
  categories = [c for c in coco['categories'] if c.get('keypoints')]
  if not categories:
    raise AnnotationError(f'{path}: no category lists "keypoints" names')
  names = list(categories[0]['keypoints'])
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
    image_path = image.get('file_name', '')
    identity = ann.get(identity_field, image.get(identity_field))
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
    rows.append(Annotation(where, image_path, str(identity), tuple(points),
                           split))
  return tuple(landmark_names or names), rows, rejects

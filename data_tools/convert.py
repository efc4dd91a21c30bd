r"""Converts photos (+ landmarks, boxes, viewpoints, encounters) into
lmid-tf TFRecords.

  python -m data_tools.convert --annotations=annotations.csv --out=data/mine
  python -m data_tools.convert --images=photos/ --out=data/mine

Input is a CSV (`path, identity[, <lm>_x, <lm>_y[, <lm>_visible] per
landmark][, box_x0, box_y0, box_x1, box_y1][, viewpoint][, encounter or
date + location]`, pixel coordinates, empty = not visible), a COCO JSON
(keypoints and `bbox` optional), or a folder per individual (`--images`,
folders.py). Without landmarks the data is identity-only (K = 0), for the
baseline. With a box, the stored image is the box plus `--box_margin`, and
several rows may share one photo; `source/path` keeps the photo.

Every stored image is at most `--store_size` pixels on its longest side, so
camera photos are decoded once here (photos.py).

Splits follow the paper's protocol for real data (§4.1.2, splits.py) with
encounters kept whole, unless `--split_column` (or split folders) gives
train / gallery / query / test: test identities are disjoint from train; the
gallery is the train set plus `--gallery_per_identity` random encounters of
each test identity; the query set is the rest of the test photos. The
gallery's train part is not stored twice: metadata lists the train shards in
the gallery.

Rows that cannot be used go to `<out>/rejects.csv` with the reason; so do
notes on rows that were kept (`kept=yes`: an extension that lies, a
one-photo encounter). `--strict` turns any reject into an error. The dataset
is written to a temporary folder and renamed into place only when complete.

`--landmark_model` gives every photo without a clicked landmark the
predicted ones (predicted_landmarks.py): the bootstrap of a collection that
has none.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import json
import os
import re
import shutil

from absl import app
from absl import flags
import tensorflow as tf
import tqdm

from data_tools import folders
from data_tools import photos
from data_tools import predicted_landmarks
from data_tools import splits as splits_lib
from lmid_tf import cli
from lmid_tf.data import annotations as annotations_lib
from lmid_tf.data import records

# Longest side stored: 4x the largest training size in configs/ (128), so
# crops, zoom and a larger model still have pixels to spare.
DEFAULT_STORE_SIZE = 512


class ConversionError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
  annotations: str = ''          # CSV or COCO file; or
  images: str = ''               # a folder per individual (folders.py)
  out: str = ''
  images_root: str = ''          # default: the annotation file's folder
  landmarks: tuple = ()          # default: every landmark in the file
  identity_field: str = 'identity'
  path_field: str = ''           # '': 'path' (CSV) or 'file_name' (COCO)
  split_column: str = ''
  # With split_column: add the train images to the gallery (§4.1.2's
  # protocol with the test identities' gallery picks already made).
  gallery_includes_train: bool = False
  test_fraction: float = 0.2     # of identities, when no split is given
  gallery_per_identity: int = 2  # encounters (photos, without encounters)
  viewpoints: tuple = ()         # allowed values; () allows any
  encounter_pattern: str = ''    # --images: regex, group 1 of the file name
  box_margin: float = 0.1        # of the box's width / height, each side
  store_size: int = DEFAULT_STORE_SIZE
  seed: int = 0
  shard_size: int = 1000
  strict: bool = False
  overwrite: bool = False
  workers: int = 4
  progress: bool = True
  landmark_model: str = ''       # predicts landmarks where none are given


@dataclasses.dataclass(frozen=True)
class _Loaded:
  annotation: annotations_lib.Annotation
  stored: photos.Stored
  landmark_source: str = 'annotated'


def _load(annotation, images_root, cfg):
  """Reads one photo and makes its stored copy. Returns _Loaded or a reason
  string."""
  if not annotation.path:
    return 'empty image path'
  try:
    # Checked before anything is opened: never read outside the root.
    path = annotations_lib.resolve_path(images_root, annotation.path)
  except ValueError as e:
    return str(e)
  if not os.path.isfile(path):
    return f'missing file {path}'
  with open(path, 'rb') as f:
    data = f.read()
  stored = photos.store(data, path, annotation.box, annotation.points,
                        cfg.box_margin, cfg.store_size)
  return stored if isinstance(stored, str) else _Loaded(annotation, stored)


def _read_rows(cfg):
  """(landmark names, rows, rejects, images root, splits given?)"""
  if cfg.images:
    try:
      re.compile(cfg.encounter_pattern)
    except re.error as e:
      raise ConversionError(f'--encounter_pattern: {e}') from None
    rows, rejects, has_splits = folders.read_tree(
        cfg.images, cfg.viewpoints, cfg.encounter_pattern)
    return (), rows, rejects, cfg.images, has_splits
  names, rows, rejects = annotations_lib.read(
      cfg.annotations, cfg.identity_field, cfg.split_column, cfg.landmarks,
      cfg.path_field)
  root = cfg.images_root or os.path.dirname(os.path.abspath(cfg.annotations))
  return names, rows, rejects, root, bool(cfg.split_column)


def _screen(rows, rejects, cfg):
  """Rows that may be loaded: one per (photo, box), viewpoints allowed."""
  seen = {}
  unique = []
  for row in rows:
    key = (os.path.normpath(row.path), row.box)
    if cfg.viewpoints and row.viewpoint and (
        row.viewpoint not in cfg.viewpoints):
      rejects.append(annotations_lib.Reject(
          row.where, row.path, f'viewpoint {row.viewpoint!r} is not one of '
          f'--viewpoints ({", ".join(cfg.viewpoints)})'))
    elif key in seen:
      what = 'path and box' if row.box else 'path'
      rejects.append(annotations_lib.Reject(
          row.where, row.path, f'duplicate {what} (first at {seen[key]})'))
    else:
      seen[key] = row.where
      unique.append(row)
  return unique


def _write_shards(directory, split, serialized, shard_size):
  num_shards = max(1, -(-len(serialized) // shard_size))
  names = []
  for shard in range(num_shards):
    name = f'{split}-{shard:05d}-of-{num_shards:05d}.tfrecord'
    with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
      for s in serialized[shard * shard_size:(shard + 1) * shard_size]:
        writer.write(s)
    names.append(name)
  return names


def _write_rejects(path, rejects):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['where', 'path', 'reason', 'kept'])
    for r in rejects:
      writer.writerow([r.where, r.path, r.reason, 'yes' if r.kept else 'no'])


def convert(cfg: ConvertConfig) -> dict:
  """Runs the conversion; returns the summary dict (also in summary.json)."""
  if bool(cfg.annotations) == bool(cfg.images):
    raise ConversionError('give one of --annotations (a CSV or COCO file) '
                          'and --images (a folder per individual)')
  source = cfg.annotations or cfg.images
  # tqdm's disable=None: bars on a terminal only (in a log they are screens
  # of carriage returns).
  quiet = None if cfg.progress else True
  out = os.path.abspath(cfg.out)
  if os.path.exists(out) and not cfg.overwrite:
    raise ConversionError(f'{out} exists; pass --overwrite to replace it')
  names, rows, rejects, images_root, given = _read_rows(cfg)
  predictor = _predictor(cfg, names, source)
  if predictor:
    names = predictor.names
  unique = _screen(rows, rejects, cfg)

  loaded = []
  with concurrent.futures.ThreadPoolExecutor(max(1, cfg.workers)) as pool:
    results = pool.map(lambda r: _load(r, images_root, cfg), unique)
    for row, result in tqdm.tqdm(zip(unique, results), total=len(unique),
                                 desc='reading photos', unit='img',
                                 disable=quiet):
      if isinstance(result, str):
        rejects.append(annotations_lib.Reject(row.where, row.path, result))
      else:
        loaded.append(result)
        if result.stored.note:
          rejects.append(annotations_lib.Reject(
              row.where, row.path, result.stored.note, kept=True))
  if predictor:
    loaded = _with_predicted_landmarks(loaded, predictor)

  by_identity = collections.defaultdict(list)
  for item in loaded:
    by_identity[item.annotation.identity].append(item)
  for identity in [n for n, items in by_identity.items() if len(items) < 2]:
    for item in by_identity.pop(identity):
      rejects.append(annotations_lib.Reject(
          item.annotation.where, item.annotation.path,
          f'identity {identity!r} has fewer than 2 images'))
  kept = [it for items in by_identity.values() for it in items]
  for encounter in splits_lib.one_photo_encounters(
      [it.annotation.path for it in kept],
      [it.annotation.encounter for it in kept]):
    first = next(it for it in kept if it.annotation.encounter == encounter)
    rejects.append(annotations_lib.Reject(
        first.annotation.where, first.annotation.path,
        f'encounter {encounter!r} has one photo (kept; check the encounter '
        'column if photos were meant to share it)', kept=True))

  refused = [r for r in rejects if not r.kept]
  if refused and cfg.strict:
    first = refused[0]
    raise ConversionError(f'{first.where}: {first.reason} '
                          f'({len(refused)} rows rejected in all; --strict)')
  if not by_identity:
    raise ConversionError(f'{source}: no usable rows '
                          f'({len(refused)} rejected)')
  try:
    splits = splits_lib.of_items(
        {n: [it.annotation for it in items] for n, items in
         by_identity.items()}, given, cfg.test_fraction,
        cfg.gallery_per_identity, cfg.seed)
  except ValueError as e:
    raise ConversionError(str(e)) from None
  explicit_gallery = given and any(
      it.annotation.split == 'gallery' for it in kept)
  per_split, shares_train = splits_lib.arrange(
      by_identity, splits, explicit_gallery and not cfg.gallery_includes_train)

  # Train identities get the first labels so the classifier's classes are
  # 0 .. num_train_identities - 1.
  train_ids = sorted({it.annotation.identity for it in per_split['train']})
  other_ids = sorted(n for n in by_identity if n not in set(train_ids))
  label_of = {n: i for i, n in enumerate(train_ids + other_ids)}
  channels = max(item.stored.channels for item in kept)

  tmp = f'{out}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    split_info = {}
    for split in records.SPLITS:
      items = per_split.get(split, [])
      serialized = [records.serialize(_to_record(it, label_of))
                    for it in tqdm.tqdm(items, desc=f'writing {split}',
                                        unit='img', disable=quiet)]
      split_info[split] = {'shards': _write_shards(
          tmp, split, serialized, cfg.shard_size) if items else []}
    if shares_train:
      # The gallery holds the train split: its shards are listed, not copied.
      per_split['gallery'] = per_split['train'] + per_split['gallery']
      split_info['gallery']['shards'] = (split_info['train']['shards']
                                         + split_info['gallery']['shards'])
    for split in records.SPLITS:
      items = per_split.get(split, [])
      visible = collections.Counter(sum(it.stored.visible) for it in items)
      split_info[split].update({
          'images': len(items),
          'identities': len({it.annotation.identity for it in items}),
          'viewpoints': dict(sorted(collections.Counter(
              it.annotation.viewpoint for it in items).items())),
          'visible_landmarks_histogram': {
              str(k): visible.get(k, 0) for k in range(len(names) + 1)},
      })
      if predictor:
        split_info[split]['landmark_sources'] = dict(sorted(
            collections.Counter(it.landmark_source for it in items).items()))
    split_info['train']['num_classes'] = len(train_ids)
    viewpoints = tuple(cfg.viewpoints) or tuple(sorted(
        {it.annotation.viewpoint for it in kept} - {''}))
    metadata = records.Metadata(landmark_names=tuple(names),
                                identities=label_of, splits=split_info,
                                channels=channels, viewpoints=viewpoints,
                                store_size=cfg.store_size)
    records.write_metadata(tmp, metadata)
    _write_rejects(os.path.join(tmp, 'rejects.csv'), rejects)
    summary = {'out': out, 'rejected': len(refused),
               'noted': len(rejects) - len(refused), 'splits': split_info,
               'landmarks': list(names), 'channels': channels,
               'viewpoints': list(viewpoints)}
    with open(os.path.join(tmp, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    if os.path.exists(out):
      old = f'{out}.old-{os.getpid()}'
      os.rename(out, old)
      os.rename(tmp, out)
      shutil.rmtree(old)
    else:
      os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return summary


def _predictor(cfg, names, source):
  """The --landmark_model's Predictor, checked against the file's
  landmarks; None without one."""
  if not cfg.landmark_model:
    return None
  if not os.path.isfile(cfg.landmark_model):
    raise ConversionError(f'--landmark_model={cfg.landmark_model}: no such '
                          'file (the landmark_model.keras written by '
                          'lmid_tf.train_landmarks)')
  try:
    predictor = predicted_landmarks.Predictor(cfg.landmark_model)
    predicted_landmarks.check_names(names, predictor, source)
  except ValueError as e:
    raise ConversionError(f'--landmark_model={cfg.landmark_model}: {e}'
                          ) from None
  return predictor


def _with_predicted_landmarks(loaded: list, predictor) -> list:
  stored, predicted = predicted_landmarks.fill(
      [it.stored for it in loaded], predictor)
  return [dataclasses.replace(it, stored=s, landmark_source=(
      'predicted' if p else 'annotated'))
          for it, s, p in zip(loaded, stored, predicted)]


def _to_record(item: _Loaded, label_of: dict) -> records.Record:
  stored, annotation = item.stored, item.annotation
  return records.Record(
      encoded=stored.encoded, height=stored.height, width=stored.width,
      label=label_of[annotation.identity], name=annotation.identity,
      xs=stored.xs, ys=stored.ys, visible=stored.visible,
      path=annotation.path, source_box=[float(v) for v in stored.region],
      viewpoint=annotation.viewpoint, encounter=annotation.encounter,
      landmark_source=item.landmark_source)


def format_summary(summary: dict) -> str:
  lines = [f'{"split":8} {"identities":>10} {"images":>8}  visible landmarks '
           '(count: images)']
  for split in records.SPLITS:
    info = summary['splits'][split]
    hist = ' '.join(f'{k}:{v}' for k, v in
                    info['visible_landmarks_histogram'].items())
    if 'landmark_sources' in info:
      hist += '  (' + ', '.join(f'{v} {k}' for k, v in
                                info['landmark_sources'].items()) + ')'
    lines.append(f'{split:8} {info["identities"]:>10} {info["images"]:>8}  '
                 f'{hist}')
  lines.append(f'rejected rows: {summary["rejected"]}, notes on kept rows: '
               f'{summary["noted"]} (see '
               f'{os.path.join(summary["out"], "rejects.csv")})')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a program, so importing never clashes."""
  flags.DEFINE_string('annotations', None,
                      'CSV or COCO JSON with image paths, identities and, '
                      'optionally, landmark pixel coordinates, boxes, '
                      'viewpoints, encounters.')
  flags.DEFINE_string('images', None, 'Instead of --annotations: a folder per '
                      'individual (identity = folder name), optionally inside '
                      'split folders train/ test/ or gallery/ query/.')
  flags.DEFINE_string('out', None, 'Output dataset folder (must not exist '
                      'unless --overwrite).')
  flags.DEFINE_string('images_root', '', 'Folder the image paths are relative '
                      'to; default: the annotation file\'s folder.')
  flags.DEFINE_list('landmarks', [], 'Landmark names to keep, in this order; '
                    'default: all, in file order.')
  flags.DEFINE_string('identity_field', 'identity', 'CSV column or COCO '
                      'annotation (or image) field holding the identity.')
  flags.DEFINE_string('path_field', '', 'CSV column or COCO annotation (or '
                      'image) field holding the image path; default: path '
                      '(CSV), file_name (COCO).')
  flags.DEFINE_string('split_column', '', 'Column/field holding train, gallery '
                      'or query; empty: use the paper\'s split protocol.')
  flags.DEFINE_bool('gallery_includes_train', False, 'With --split_column: '
                    'the gallery is the train images plus the rows marked '
                    "gallery (the paper's protocol, §4.1.2).")
  flags.DEFINE_float('test_fraction', 0.2, 'Fraction of identities held out as '
                     'test identities (gallery + query).')
  flags.DEFINE_integer('gallery_per_identity', 2, 'Encounters (photos, when '
                       'there are no encounters) of each test identity that '
                       'go to the gallery; the rest are queries.')
  flags.DEFINE_list('viewpoints', [], 'Allowed viewpoint values (e.g. '
                    'left,right); others are rejected. With --images, a file '
                    'name holding one of them gives the viewpoint.')
  flags.DEFINE_string('encounter_pattern', '', 'With --images: a regular '
                      'expression whose first group in a file name names its '
                      'encounter, e.g. "^(\\d+)_".')
  flags.DEFINE_float('box_margin', 0.1, 'Margin around each box, as a '
                     'fraction of its width / height on each side.')
  flags.DEFINE_integer('store_size', DEFAULT_STORE_SIZE, 'Longest side of '
                       'each stored image in pixels (never enlarged); 0 '
                       'stores the full resolution.')
  flags.DEFINE_integer('seed', 0, 'Seed of the split protocol.')
  flags.DEFINE_integer('shard_size', 1000, 'Records per TFRecord shard.')
  flags.DEFINE_bool('strict', False, 'Fail on any rejected row.')
  flags.DEFINE_bool('overwrite', False, 'Replace --out if it exists.')
  flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Image-checking threads.')
  flags.DEFINE_string('landmark_model', '', 'A landmark_model.keras '
                      '(lmid_tf.train_landmarks): photos without a clicked '
                      'landmark get its predicted ones, marked predicted.')


def main(argv):
  del argv
  if not (FLAGS.annotations or FLAGS.images) or not FLAGS.out:
    raise app.UsageError('--out and one of --annotations, --images are '
                         'required')
  cfg = ConvertConfig(
      annotations=FLAGS.annotations or '', images=FLAGS.images or '',
      out=FLAGS.out, viewpoints=tuple(FLAGS.viewpoints),
      encounter_pattern=FLAGS.encounter_pattern,
      box_margin=FLAGS.box_margin, store_size=FLAGS.store_size,
      images_root=FLAGS.images_root, landmarks=tuple(FLAGS.landmarks),
      identity_field=FLAGS.identity_field, path_field=FLAGS.path_field,
      split_column=FLAGS.split_column,
      gallery_includes_train=FLAGS.gallery_includes_train,
      test_fraction=FLAGS.test_fraction,
      gallery_per_identity=FLAGS.gallery_per_identity, seed=FLAGS.seed,
      shard_size=FLAGS.shard_size, strict=FLAGS.strict,
      overwrite=FLAGS.overwrite, workers=FLAGS.workers,
      landmark_model=FLAGS.landmark_model)
  print(format_summary(convert(cfg)))


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'convert', errors=(ConversionError,))

r"""Converts images + landmark annotations into lmid-tf TFRecords.

  python -m data_tools.convert --annotations=annotations.csv --out=data/mine

Input is a CSV (`path, identity, <lm>_x, <lm>_y[, <lm>_visible]` per
landmark, pixel coordinates, empty = not visible) or a COCO keypoints JSON.
Splits follow the paper's protocol for real data (§4.1.2) unless
`--split_column` names a column holding train / gallery / query:
test identities are disjoint from train; the gallery is the train set plus
`--gallery_per_identity` random images of each test identity; the query set
is the rest of the test images.

Rows that cannot be used go to `<out>/rejects.csv` with the reason;
`--strict` turns any reject into an error. The dataset is written to a
temporary folder and renamed into place only when complete.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import json
import os
import shutil

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow as tf
import tqdm

from lmid_tf.data import annotations as annotations_lib
from lmid_tf import cli
from lmid_tf.data import records


class ConversionError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
  annotations: str
  out: str
  images_root: str = ''          # default: the annotation file's folder
  landmarks: tuple = ()          # default: every landmark in the file
  identity_field: str = 'identity'
  path_field: str = ''           # '': 'path' (CSV) or 'file_name' (COCO)
  split_column: str = ''
  # With split_column: add the train images to the gallery (§4.1.2's
  # protocol with the test identities' gallery picks already made).
  gallery_includes_train: bool = False
  test_fraction: float = 0.2     # of identities, when no split column
  gallery_per_identity: int = 2
  seed: int = 0
  shard_size: int = 1000
  strict: bool = False
  overwrite: bool = False
  workers: int = 4
  progress: bool = True


@dataclasses.dataclass(frozen=True)
class _Loaded:
  annotation: annotations_lib.Annotation
  encoded: bytes
  height: int
  width: int
  channels: int


_MAGIC = (b'\x89PNG', b'\xff\xd8\xff')




def _load(annotation, images_root):
  """Reads and checks one image. Returns _Loaded or a reason string."""
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
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if image is None or image.size == 0:
    return f'undecodable image {path}'
  height, width = image.shape[:2]
  channels = 1 if image.ndim == 2 else 3
  for i, point in enumerate(annotation.points):
    if point is None:
      continue
    x, y = point
    if not (0 <= x <= width and 0 <= y <= height):
      return (f'out-of-frame coordinate for landmark {i}: ({x:g}, {y:g}) in a '
              f'{width}x{height} image')
  if not data.startswith(_MAGIC):
    # TensorFlow's decoder reads PNG and JPEG; anything else is re-encoded.
    if image.ndim == 3 and image.shape[2] == 4:
      image = image[:, :, :3]
    data = cv2.imencode('.png', image)[1].tobytes()
  return _Loaded(annotation, data, height, width, channels)


def _assign_splits(identities: dict, cfg: ConvertConfig) -> dict:
  """identity -> list of (split, index-in-identity) following §4.1.2."""
  rng = np.random.default_rng(cfg.seed)
  names = sorted(identities)
  # Only identities with a query image left after the gallery picks can be
  # test identities.
  eligible = [n for n in names
              if len(identities[n]) > cfg.gallery_per_identity]
  num_test = int(round(cfg.test_fraction * len(names)))
  num_test = min(num_test, len(eligible))
  test = set(rng.choice(eligible, size=num_test, replace=False).tolist()) if (
      num_test) else set()
  splits = {}
  for name in names:
    count = len(identities[name])
    if name not in test:
      splits[name] = ['train'] * count
      continue
    order = rng.permutation(count)
    assigned = ['query'] * count
    for i in order[:cfg.gallery_per_identity]:
      assigned[i] = 'gallery'
    splits[name] = assigned
  return splits


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
    writer.writerow(['where', 'path', 'reason'])
    for r in rejects:
      writer.writerow([r.where, r.path, r.reason])


def convert(cfg: ConvertConfig) -> dict:
  """Runs the conversion; returns the summary dict (also in summary.json)."""
  # tqdm's disable=None: bars on a terminal only (in a log they are screens
  # of carriage returns).
  quiet = None if cfg.progress else True
  out = os.path.abspath(cfg.out)
  if os.path.exists(out) and not cfg.overwrite:
    raise ConversionError(f'{out} exists; pass --overwrite to replace it')
  images_root = cfg.images_root or os.path.dirname(
      os.path.abspath(cfg.annotations))
  names, rows, rejects = annotations_lib.read(
      cfg.annotations, cfg.identity_field, cfg.split_column, cfg.landmarks,
      cfg.path_field)

  seen = {}
  unique = []
  for row in rows:
    key = os.path.normpath(row.path)
    if key in seen:
      rejects.append(annotations_lib.Reject(
          row.where, row.path, f'duplicate path (first at {seen[key]})'))
    else:
      seen[key] = row.where
      unique.append(row)

  loaded = []
  with concurrent.futures.ThreadPoolExecutor(max(1, cfg.workers)) as pool:
    results = pool.map(lambda r: _load(r, images_root), unique)
    for row, result in tqdm.tqdm(zip(unique, results), total=len(unique),
                                 desc='checking images', unit='img',
                                 disable=quiet):
      if isinstance(result, str):
        rejects.append(annotations_lib.Reject(row.where, row.path, result))
      else:
        loaded.append(result)

  by_identity = collections.defaultdict(list)
  for item in loaded:
    by_identity[item.annotation.identity].append(item)
  for identity in [n for n, items in by_identity.items() if len(items) < 2]:
    for item in by_identity.pop(identity):
      rejects.append(annotations_lib.Reject(
          item.annotation.where, item.annotation.path,
          f'identity {identity!r} has fewer than 2 images'))

  if rejects and cfg.strict:
    first = rejects[0]
    raise ConversionError(f'{first.where}: {first.reason} '
                          f'({len(rejects)} rows rejected in all; --strict)')
  if not by_identity:
    raise ConversionError(f'{cfg.annotations}: no usable rows '
                          f'({len(rejects)} rejected)')

  if cfg.split_column:
    splits = {}
    for name, items in by_identity.items():
      splits[name] = [item.annotation.split for item in items]
      bad = [s for s in splits[name] if s not in records.SPLITS]
      if bad:
        item = items[splits[name].index(bad[0])]
        raise ConversionError(
            f'{item.annotation.where}: split {bad[0]!r} is not one of '
            f'{records.SPLITS}')
  else:
    splits = _assign_splits(by_identity, cfg)

  # Train identities get the first labels so the classifier's classes are
  # 0 .. num_train_identities - 1.
  train_ids = sorted(n for n in by_identity if 'train' in splits[n])
  other_ids = sorted(n for n in by_identity if n not in set(train_ids))
  label_of = {n: i for i, n in enumerate(train_ids + other_ids)}
  channels = max(item.channels for items in by_identity.values()
                 for item in items)

  per_split = collections.defaultdict(list)
  for name in sorted(by_identity, key=label_of.get):
    for item, split in zip(by_identity[name], splits[name]):
      per_split[split].append(item)

  if not cfg.split_column or cfg.gallery_includes_train:
    # §4.1.2: the gallery is the whole train set plus the test identities'
    # gallery picks, so every query is searched among all known animals.
    per_split['gallery'] = per_split['train'] + per_split['gallery']

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
      shards = _write_shards(tmp, split, serialized, cfg.shard_size) if (
          items) else []
      visible = collections.Counter(
          sum(p is not None for p in it.annotation.points) for it in items)
      split_info[split] = {
          'images': len(items),
          'identities': len({it.annotation.identity for it in items}),
          'shards': shards,
          'visible_landmarks_histogram': {
              str(k): visible.get(k, 0) for k in range(len(names) + 1)},
      }
    split_info['train']['num_classes'] = len(train_ids)
    metadata = records.Metadata(landmark_names=tuple(names),
                                identities=label_of, splits=split_info,
                                channels=channels)
    records.write_metadata(tmp, metadata)
    _write_rejects(os.path.join(tmp, 'rejects.csv'), rejects)
    summary = {'out': out, 'rejected': len(rejects), 'splits': split_info,
               'landmarks': list(names), 'channels': channels}
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


def _to_record(item: _Loaded, label_of: dict) -> records.Record:
  xs, ys, visible = [], [], []
  for point in item.annotation.points:
    if point is None:
      xs.append(0.0), ys.append(0.0), visible.append(0)
    else:
      xs.append(point[0] / item.width)
      ys.append(point[1] / item.height)
      visible.append(1)
  return records.Record(
      encoded=item.encoded, height=item.height, width=item.width,
      label=label_of[item.annotation.identity],
      name=item.annotation.identity, xs=xs, ys=ys, visible=visible,
      path=item.annotation.path)


def format_summary(summary: dict) -> str:
  lines = [f'{"split":8} {"identities":>10} {"images":>8}  visible landmarks '
           '(count: images)']
  for split in records.SPLITS:
    info = summary['splits'][split]
    hist = ' '.join(f'{k}:{v}' for k, v in
                    info['visible_landmarks_histogram'].items())
    lines.append(f'{split:8} {info["identities"]:>10} {info["images"]:>8}  '
                 f'{hist}')
  lines.append(f'rejected rows: {summary["rejected"]} (see '
               f'{os.path.join(summary["out"], "rejects.csv")})')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a program, so importing never clashes."""
  flags.DEFINE_string('annotations', None,
                      'CSV or COCO keypoints JSON with image paths, identities '
                      'and landmark pixel coordinates.')
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
  flags.DEFINE_integer('gallery_per_identity', 2, 'Images of each test identity '
                       'that go to the gallery; the rest are queries.')
  flags.DEFINE_integer('seed', 0, 'Seed of the split protocol.')
  flags.DEFINE_integer('shard_size', 1000, 'Records per TFRecord shard.')
  flags.DEFINE_bool('strict', False, 'Fail on any rejected row.')
  flags.DEFINE_bool('overwrite', False, 'Replace --out if it exists.')
  flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Image-checking threads.')


def main(argv):
  del argv
  if not FLAGS.annotations or not FLAGS.out:
    raise app.UsageError('--annotations and --out are required')
  cfg = ConvertConfig(
      annotations=FLAGS.annotations, out=FLAGS.out,
      images_root=FLAGS.images_root, landmarks=tuple(FLAGS.landmarks),
      identity_field=FLAGS.identity_field, path_field=FLAGS.path_field,
      split_column=FLAGS.split_column,
      gallery_includes_train=FLAGS.gallery_includes_train,
      test_fraction=FLAGS.test_fraction,
      gallery_per_identity=FLAGS.gallery_per_identity, seed=FLAGS.seed,
      shard_size=FLAGS.shard_size, strict=FLAGS.strict,
      overwrite=FLAGS.overwrite, workers=FLAGS.workers)
  print(format_summary(convert(cfg)))


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'convert', errors=(ConversionError,))

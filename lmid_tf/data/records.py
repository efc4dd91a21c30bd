"""The one definition of the lmid-tf TFRecord schema and its metadata file.

A dataset folder written by `data_tools.convert` holds, per split
(`train`, `gallery`, `query`), shards named `<split>-00000-of-00004.tfrecord`
and one `metadata.json`. Each record is a `tf.train.Example` with:

  image/encoded     bytes    the original encoded image (PNG or JPEG)
  image/height      int64    height of the encoded image in pixels
  image/width       int64    width of the encoded image in pixels
  identity/label    int64    dense identity index, from metadata `identities`
  identity/name     bytes    identity name as the user wrote it
  landmarks/x       float[K] x / width, in [0, 1] (0 for an invisible landmark)
  landmarks/y       float[K] y / height, in [0, 1]
  landmarks/visible int64[K] 1 visible, 0 not visible
  landmarks/source  bytes    b'annotated' (given with the photo) or
                             b'predicted' (by a landmark predictor, at
                             conversion: data_tools.convert --landmark_model)
  source/path       bytes    the original photo's path as given in the
                             annotations (or relative to --images)
  source/box        float[4] the region of that photo stored here (x0, y0,
                             x1, y1) in photo pixels: the animal's box plus
                             its margin, or the whole photo
  viewpoint         bytes    e.g. b'left'; b'' when not given
  encounter         bytes    photos taken together; b'' when not given

The stored image is that region at most `store_size` pixels on its longest
side (data_tools.convert), so a camera photo is decoded once, at conversion.
Records written before source/box, viewpoint, encounter and
landmarks/source existed read with their defaults (b'', zeros,
b'annotated').

Coordinates are continuous: (0, 0) is the top-left corner of the top-left
pixel and (1, 1) the bottom-right corner of the bottom-right pixel, so they
are unchanged by resizing the image.
"""

import dataclasses
import json
import os
from typing import Mapping, Sequence

import tensorflow as tf

from lmid_tf import files

SCHEMA_VERSION = 1
METADATA_FILE = 'metadata.json'
SPLITS = ('train', 'gallery', 'query')


@dataclasses.dataclass(frozen=True)
class Record:
  """One annotated image, as the converter writes it."""
  encoded: bytes
  height: int
  width: int
  label: int
  name: str
  xs: Sequence[float]   # normalised, one per landmark
  ys: Sequence[float]
  visible: Sequence[int]
  path: str
  source_box: Sequence[float] = (0.0, 0.0, 0.0, 0.0)
  viewpoint: str = ''
  encounter: str = ''
  landmark_source: str = 'annotated'   # or 'predicted'


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def serialize(record: Record) -> bytes:
  """Record -> serialized tf.train.Example."""
  feature = {
      'image/encoded': _bytes([record.encoded]),
      'image/height': _ints([record.height]),
      'image/width': _ints([record.width]),
      'identity/label': _ints([record.label]),
      'identity/name': _bytes([record.name.encode('utf-8')]),
      'landmarks/x': _floats(record.xs),
      'landmarks/y': _floats(record.ys),
      'landmarks/visible': _ints(record.visible),
      'landmarks/source': _bytes([record.landmark_source.encode('utf-8')]),
      'source/path': _bytes([record.path.encode('utf-8')]),
      'source/box': _floats(record.source_box),
      'viewpoint': _bytes([record.viewpoint.encode('utf-8')]),
      'encounter': _bytes([record.encounter.encode('utf-8')]),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec(num_landmarks: int) -> dict:
  k = num_landmarks
  return {
      'image/encoded': tf.io.FixedLenFeature([], tf.string),
      'image/height': tf.io.FixedLenFeature([], tf.int64),
      'image/width': tf.io.FixedLenFeature([], tf.int64),
      'identity/label': tf.io.FixedLenFeature([], tf.int64),
      'identity/name': tf.io.FixedLenFeature([], tf.string),
      'landmarks/x': tf.io.FixedLenFeature([k], tf.float32),
      'landmarks/y': tf.io.FixedLenFeature([k], tf.float32),
      'landmarks/visible': tf.io.FixedLenFeature([k], tf.int64),
      'landmarks/source': tf.io.FixedLenFeature([], tf.string,
                                                default_value=b'annotated'),
      'source/path': tf.io.FixedLenFeature([], tf.string),
      'source/box': tf.io.FixedLenFeature([4], tf.float32,
                                          default_value=[0.0] * 4),
      'viewpoint': tf.io.FixedLenFeature([], tf.string, default_value=b''),
      'encounter': tf.io.FixedLenFeature([], tf.string, default_value=b''),
  }


def parse(serialized: tf.Tensor, num_landmarks: int) -> dict:
  """Serialized Example(s) -> dict of tensors (decoding is not done here).

  Returns:
    encoded: [] string; label: [] int32; name, path, viewpoint,
    encounter, landmark_source: [] string; source_box: [4] float32 photo pixels;
    landmarks: [K, 2] float32 normalised (x, y); visible: [K] float32 0/1.
    A leading batch dimension is kept if `serialized` has one.
  """
  if serialized.shape.rank == 0:
    parsed = tf.io.parse_single_example(serialized, feature_spec(num_landmarks))
  else:
    parsed = tf.io.parse_example(serialized, feature_spec(num_landmarks))
  return {
      'encoded': parsed['image/encoded'],
      'label': tf.cast(parsed['identity/label'], tf.int32),
      'name': parsed['identity/name'],
      'path': parsed['source/path'],
      'source_box': parsed['source/box'],
      'viewpoint': parsed['viewpoint'],
      'encounter': parsed['encounter'],
      'landmark_source': parsed['landmarks/source'],
      'landmarks': tf.stack([parsed['landmarks/x'], parsed['landmarks/y']],
                            axis=-1),
      'visible': tf.cast(parsed['landmarks/visible'], tf.float32),
  }


@dataclasses.dataclass(frozen=True)
class Metadata:
  landmark_names: tuple
  identities: Mapping[str, int]     # identity name -> label
  splits: Mapping[str, dict]        # split -> {images, identities, shards}
  channels: int                     # 1 grayscale, 3 colour
  schema_version: int = SCHEMA_VERSION
  viewpoints: tuple = ()            # the values records may hold, if known
  store_size: int = 0               # longest stored side; 0: as given

  @property
  def num_landmarks(self) -> int:
    return len(self.landmark_names)

  def shard_paths(self, data_dir: str, split: str) -> list:
    """The split's shard files; raises naming the first one missing.

    The gallery lists the train shards first when it holds the train split
    (the paper's protocol), so those records are stored once."""
    if split not in self.splits:
      raise ValueError(f'{data_dir}: dataset has no split {split!r} '
                       f'(it has {sorted(self.splits)})')
    paths = [os.path.join(data_dir, s) for s in self.splits[split]['shards']]
    for path in paths:
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{path}: shard {os.path.basename(path)} of the {split} split is '
            f'missing ({METADATA_FILE} lists {len(paths)}); restore it or '
            're-run data_tools.convert')
    return paths


def read_shards(paths: Sequence[str]) -> list:
  """Every serialized record of `paths`, in order, with integrity checked.

  TFRecord frames carry CRCs, so a truncated or bit-flipped shard raises
  DataLossError; that error does not say where, this one does.
  """
  found = []
  for path in paths:
    index = 0
    try:
      for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
        found.append(serialized)
        index += 1
    except tf.errors.DataLossError as e:
      raise ValueError(
          f'{path}: record {index} is corrupt or truncated ({e.message.strip()}'
          f'); records 0..{index - 1} are readable. Restore the shard or '
          're-run data_tools.convert') from None
  return found


def read_split(data_dir: str, split: str) -> tuple:
  """(metadata, [serialized records]) of one split, checked as it reads."""
  metadata = read_metadata(data_dir)
  paths = metadata.shard_paths(data_dir, split)
  serialized = read_shards(paths)
  expected = metadata.splits[split].get('images')
  if expected is not None and expected != len(serialized):
    raise ValueError(f'{data_dir}: the {split} split has {len(serialized)} '
                     f'records, {METADATA_FILE} says {expected}; re-run '
                     'data_tools.convert')
  return metadata, serialized


def parse_split(data_dir: str, split: str) -> dict:
  """Every record of one split parsed at once, in file order (the order
  evaluation embeds it in): parse()'s fields as numpy arrays."""
  metadata, serialized = read_split(data_dir, split)
  parsed = parse(tf.constant(serialized), metadata.num_landmarks)
  return {name: value.numpy() for name, value in parsed.items()}


def write_metadata(data_dir: str, metadata: Metadata) -> None:
  path = os.path.join(data_dir, METADATA_FILE)
  files.write_text(path, json.dumps(dataclasses.asdict(metadata), indent=2,
                                    sort_keys=True))


def read_metadata(data_dir: str) -> Metadata:
  path = os.path.join(data_dir, METADATA_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} not found: is {data_dir} a dataset written by '
        'data_tools.convert?')
  with open(path) as f:
    raw = json.load(f)
  version = raw.get('schema_version')
  if version != SCHEMA_VERSION:
    raise ValueError(f'{path}: schema_version {version}, this code reads '
                     f'{SCHEMA_VERSION}; re-run data_tools.convert')
  raw['landmark_names'] = tuple(raw['landmark_names'])
  raw['viewpoints'] = tuple(raw.get('viewpoints', ()))
  return Metadata(**raw)

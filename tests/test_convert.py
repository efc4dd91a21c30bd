"""Conversion: CSV/COCO -> TFRecords, rejects, splits, atomic output."""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from data_tools import convert
from lmid_tf.data import records

NAMES = ('eye', 'tail')


def _image(path, size=(20, 30), colour=False):
  rng = np.random.default_rng(abs(hash(str(path))) % 1000)
  shape = size + ((3,) if colour else ())
  cv2.imwrite(str(path), (rng.random(shape) * 255).astype(np.uint8))


def _write_csv(folder, rows, header=None):
  header = header or ['path', 'identity', 'eye_x', 'eye_y', 'eye_visible',
                      'tail_x', 'tail_y', 'tail_visible']
  path = os.path.join(str(folder), 'annotations.csv')
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def _dataset(folder, identities=5, per_identity=4):
  """Valid rows: 30x20 images, identity i has `per_identity` images."""
  rows = []
  for i in range(identities):
    for j in range(per_identity):
      name = f'im_{i}_{j}.png'
      _image(os.path.join(str(folder), name))
      rows.append([name, f'animal{i}', '3', '4', '1', '', '', '0'])
  return rows


def _read_split(out, split):
  metadata = records.read_metadata(out)
  paths = metadata.shard_paths(out, split)
  examples = [records.parse(s, metadata.num_landmarks)
              for s in tf.data.TFRecordDataset(paths)]
  return metadata, examples


def test_csv_round_trip_values(tmp_path):
  _image(tmp_path / 'a.png', size=(20, 40))
  _image(tmp_path / 'b.png', size=(20, 40))
  path = _write_csv(tmp_path, [
      ['a.png', 'ray1', '10', '5', '1', '30', '15', '1'],
      ['b.png', 'ray1', '', '', '', '40', '20', '1'],
  ])
  cfg = convert.ConvertConfig(annotations=path, out=str(tmp_path / 'out'),
                              test_fraction=0.0, progress=False)
  summary = convert.convert(cfg)
  metadata, examples = _read_split(str(tmp_path / 'out'), 'train')
  assert metadata.landmark_names == NAMES
  assert metadata.identities == {'ray1': 0}
  assert metadata.channels == 1
  assert summary['splits']['train']['images'] == 2
  first, second = examples
  np.testing.assert_allclose(first['landmarks'].numpy(),
                             [[10 / 40, 5 / 20], [30 / 40, 15 / 20]])
  np.testing.assert_array_equal(first['visible'].numpy(), [1, 1])
  np.testing.assert_array_equal(second['visible'].numpy(), [0, 1])
  np.testing.assert_allclose(second['landmarks'].numpy()[1], [1.0, 1.0])
  assert first['path'].numpy() == b'a.png'
  assert first['name'].numpy() == b'ray1'
  decoded = tf.io.decode_image(first['encoded'])
  expected = cv2.imread(str(tmp_path / 'a.png'), cv2.IMREAD_GRAYSCALE)
  np.testing.assert_array_equal(decoded.numpy()[..., 0], expected)
  assert summary['splits']['train']['visible_landmarks_histogram'] == {
      '0': 0, '1': 1, '2': 1}


def test_coco_import(tmp_path):
  for name in ('a.png', 'b.png'):
    _image(tmp_path / name, size=(10, 20), colour=True)
  coco = {
      'images': [{'id': 1, 'file_name': 'a.png', 'width': 20, 'height': 10},
                 {'id': 2, 'file_name': 'b.png', 'width': 20, 'height': 10}],
      'categories': [{'id': 1, 'name': 'ray', 'keypoints': list(NAMES)}],
      'annotations': [
          {'id': 7, 'image_id': 1, 'keypoints': [2, 3, 2, 0, 0, 0],
           'individual': 'x'},
          {'id': 8, 'image_id': 2, 'keypoints': [4, 5, 1, 20, 10, 2],
           'individual': 'x'}],
  }
  path = tmp_path / 'coco.json'
  path.write_text(json.dumps(coco))
  convert.convert(convert.ConvertConfig(
      annotations=str(path), out=str(tmp_path / 'out'), test_fraction=0.0,
      identity_field='individual', progress=False))
  metadata, (a, b) = _read_split(str(tmp_path / 'out'), 'train')
  assert metadata.channels == 3
  assert metadata.landmark_names == NAMES
  np.testing.assert_allclose(a['landmarks'].numpy()[0], [0.1, 0.3])
  np.testing.assert_array_equal(a['visible'].numpy(), [1, 0])
  # v=1 (labelled, occluded) keeps its known position.
  np.testing.assert_array_equal(b['visible'].numpy(), [1, 1])
  np.testing.assert_allclose(b['landmarks'].numpy(), [[0.2, 0.5], [1, 1]])


def test_every_reject_reason(tmp_path):
  rows = _dataset(tmp_path, identities=3, per_identity=3)
  (tmp_path / 'broken.png').write_bytes(b'not an image at all')
  _image(tmp_path / 'lonely.png')
  _image(tmp_path / 'nan.png')
  _image(tmp_path / 'out.png')
  _image(tmp_path / 'short.png')
  rows += [
      ['missing.png', 'animal0', '1', '1', '1', '', '', '0'],      # line 11
      ['broken.png', 'animal0', '1', '1', '1', '', '', '0'],       # line 12
      ['nan.png', 'animal0', 'nan', '1', '1', '', '', '0'],        # line 13
      ['out.png', 'animal0', '31', '1', '1', '', '', '0'],         # line 14
      ['short.png', 'animal0', '1', '1', '1'],                     # line 15
      [rows[0][0], 'animal1', '1', '1', '1', '', '', '0'],         # line 16
      ['lonely.png', 'solo', '1', '1', '1', '', '', '0'],          # line 17
  ]
  path = _write_csv(tmp_path, rows)
  out = str(tmp_path / 'out')
  summary = convert.convert(convert.ConvertConfig(
      annotations=path, out=out, test_fraction=0.0, progress=False))
  with open(os.path.join(out, 'rejects.csv')) as f:
    rejects = {r['where'].rsplit(':', 1)[1]: r['reason']
               for r in csv.DictReader(f)}
  assert summary['rejected'] == 7
  assert rejects['11'].startswith('missing file')
  assert rejects['12'].startswith('undecodable image')
  assert 'NaN' in rejects['13']
  assert rejects['14'].startswith('out-of-frame coordinate')
  assert rejects['15'].startswith('wrong landmark count')
  assert rejects['16'].startswith('duplicate path (first at')
  assert rejects['17'] == "identity 'solo' has fewer than 2 images"
  assert summary['splits']['train']['images'] == 9


def test_coco_wrong_landmark_count_is_rejected(tmp_path):
  _image(tmp_path / 'a.png')
  coco = {'images': [{'id': 1, 'file_name': 'a.png'}],
          'categories': [{'keypoints': list(NAMES)}],
          'annotations': [{'image_id': 1, 'keypoints': [1, 1, 2],
                           'identity': 'x'}]}
  (tmp_path / 'c.json').write_text(json.dumps(coco))
  with pytest.raises(convert.ConversionError,
                     match=r'c.json:annotations\[0\]: wrong landmark count'):
    convert.convert(convert.ConvertConfig(
        annotations=str(tmp_path / 'c.json'), out=str(tmp_path / 'out'),
        strict=True, progress=False))


@pytest.mark.slow
def test_strict_cli_fails_naming_file_and_line(tmp_path):
  rows = _dataset(tmp_path, identities=2, per_identity=2)
  rows.append(['gone.png', 'animal0', '1', '1', '1', '', '', '0'])
  path = _write_csv(tmp_path, rows)
  out = tmp_path / 'out'
  result = subprocess.run(
      [sys.executable, '-m', 'data_tools.convert', f'--annotations={path}',
       f'--out={out}', '--strict'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1
  assert f'{path}:6: missing file' in result.stderr
  assert not out.exists()


def test_output_is_atomic(tmp_path, monkeypatch):
  path = _write_csv(tmp_path, _dataset(tmp_path))
  out = tmp_path / 'out'
  convert.convert(convert.ConvertConfig(annotations=path, out=str(out),
                                        progress=False))
  before = sorted(os.listdir(out))
  metadata_before = (out / records.METADATA_FILE).read_text()

  calls = []

  def crash(directory, split, serialized, shard_size):
    calls.append(split)
    if len(calls) == 2:
      raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    return real(directory, split, serialized, shard_size)

  real = convert._write_shards
  monkeypatch.setattr(convert, '_write_shards', crash)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(convert.ConvertConfig(annotations=path, out=str(out),
                                          overwrite=True, progress=False))
  assert sorted(os.listdir(out)) == before
  assert (out / records.METADATA_FILE).read_text() == metadata_before
  assert [p for p in os.listdir(tmp_path) if '.tmp-' in p] == []
  with pytest.raises(convert.ConversionError, match='exists'):
    convert.convert(convert.ConvertConfig(annotations=path, out=str(out),
                                          progress=False))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_split_protocol(tmp_path, seed):
  rows = _dataset(tmp_path, identities=10, per_identity=5)
  rows += [[f'im_few_{j}.png', 'few', '1', '1', '1', '', '', '0']
           for j in range(2)]
  for j in range(2):
    _image(tmp_path / f'im_few_{j}.png')
  path = _write_csv(tmp_path, rows)
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(
      annotations=path, out=out, test_fraction=0.3, gallery_per_identity=2,
      seed=seed, shard_size=7, progress=False))
  metadata = records.read_metadata(out)
  names = {s: [e['name'].numpy().decode() for e in _read_split(out, s)[1]]
           for s in records.SPLITS}
  train, gallery, query = (set(names[s]) for s in records.SPLITS)
  test_ids = set(query)
  assert len(test_ids) == 3
  assert not train & test_ids
  assert 'few' in train  # too few images to leave a query
  for identity in test_ids:
    assert names['gallery'].count(identity) == 2
    assert names['query'].count(identity) == 3
  # The gallery is the train set plus the test identities' gallery images.
  assert sorted(n for n in names['gallery'] if n in train) == sorted(
      names['train'])
  assert metadata.splits['train']['num_classes'] == len(train)
  assert max(metadata.identities[n] for n in train) == len(train) - 1
  assert len(metadata.splits['train']['shards']) == -(-len(names['train']) // 7)


def test_explicit_split_column(tmp_path):
  rows = _dataset(tmp_path, identities=2, per_identity=3)
  splits = ['train'] * 3 + ['gallery', 'query', 'query']
  header = ['path', 'identity', 'eye_x', 'eye_y', 'eye_visible', 'tail_x',
            'tail_y', 'tail_visible', 'split']
  path = _write_csv(tmp_path, [r + [s] for r, s in zip(rows, splits)], header)
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(annotations=path, out=out,
                                        split_column='split', progress=False))
  metadata = records.read_metadata(out)
  assert [metadata.splits[s]['images'] for s in records.SPLITS] == [3, 1, 2]
  bad = _write_csv(tmp_path, [r + ['test'] for r in rows], header)
  with pytest.raises(convert.ConversionError, match=r':2: split .test.'):
    convert.convert(convert.ConvertConfig(annotations=bad, out=out + '2',
                                          split_column='split',
                                          progress=False))


def test_header_errors_name_the_file(tmp_path):
  path = _write_csv(tmp_path, [], header=['file', 'identity', 'a_x', 'a_y'])
  with pytest.raises(Exception, match=r"annotations.csv:1: header has no 'path'"):
    convert.convert(convert.ConvertConfig(annotations=path,
                                          out=str(tmp_path / 'o'),
                                          progress=False))

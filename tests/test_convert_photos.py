"""Conversion of real-looking collections: folders per individual, no
landmarks, boxes, viewpoints, encounters, bounded stored size, bad files."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data_tools import convert
from data_tools import crops
from data_tools import photos
from data_tools import splits
from lmid_tf.data import records


def _photo(path, width=40, height=30, seed=0, ext_format=None):
  rng = np.random.default_rng(seed)
  image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  ok, data = cv2.imencode(ext_format or os.path.splitext(str(path))[1],
                          image)
  assert ok
  with open(path, 'wb') as f:
    f.write(data.tobytes())
  return image


def _examples(out, split):
  metadata = records.read_metadata(out)
  return [records.parse(tf.constant(s), metadata.num_landmarks)
          for s in records.read_split(out, split)[1]]


def _rejects(out):
  with open(os.path.join(out, 'rejects.csv')) as f:
    return list(csv.DictReader(f))


def _tree(root, identities=6, per_identity=4, split_of=lambda i: None):
  for i in range(identities):
    split = split_of(i)
    for j in range(per_identity):
      folder = os.path.join(root, split, f'nyala_{i}') if split else (
          os.path.join(root, f'nyala_{i}'))
      side = 'left' if j % 2 else 'right'
      # Nyala-style names: the number is the sighting, left and right flank.
      _photo(os.path.join(folder, f'{j // 2}_{side}photo.png'),
             seed=10 * i + j)


def test_folder_without_split_folders_gets_the_protocol(tmp_path):
  _tree(str(tmp_path / 'photos'))
  out = str(tmp_path / 'out')
  summary = convert.convert(convert.ConvertConfig(
      images=str(tmp_path / 'photos'), out=out, test_fraction=0.5,
      viewpoints=('left', 'right'), progress=False))
  metadata = records.read_metadata(out)
  assert metadata.num_landmarks == 0
  assert sorted(metadata.identities) == [f'nyala_{i}' for i in range(6)]
  assert [summary['splits'][s]['images'] for s in records.SPLITS] == [
      12, 12 + 3 * 2, 3 * 2]
  # The gallery's train part is the train shards, listed, not copied.
  gallery_shards = metadata.splits['gallery']['shards']
  assert gallery_shards[0] == metadata.splits['train']['shards'][0]
  assert len([f for f in os.listdir(out) if f.startswith('gallery')]) == 1
  train = _examples(out, 'train')
  gallery = _examples(out, 'gallery')
  assert [e['path'].numpy() for e in gallery[:12]] == [
      e['path'].numpy() for e in train]
  first = train[0]
  assert first['name'].numpy() == b'nyala_0'
  assert first['viewpoint'].numpy() == b'left'
  assert first['path'].numpy() == b'nyala_0/0_leftphoto.png'
  assert first['encounter'].numpy() == b''
  assert first['landmarks'].shape == (0, 2)
  assert metadata.viewpoints == ('left', 'right')
  assert summary['splits']['train']['viewpoints'] == {'left': 6, 'right': 6}


def test_encounters_from_file_names_stay_whole(tmp_path):
  _tree(str(tmp_path / 'photos'), identities=8)
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(
      images=str(tmp_path / 'photos'), out=out, test_fraction=0.5,
      gallery_per_identity=1, encounter_pattern=r'^(\d+)_', progress=False))
  sides = {}
  for split in ('gallery', 'query'):
    for e in _examples(out, split):
      sides.setdefault(e['encounter'].numpy().decode(), set()).add(split)
  assert sorted(sides)[:2] == ['nyala_0/0', 'nyala_0/1']
  # Train encounters are in the gallery only; each test identity has one
  # encounter (2 photos) in the gallery and one in the query set.
  assert all(s in ({'gallery'}, {'query'}) for s in sides.values())
  queries = [e['encounter'].numpy() for e in _examples(out, 'query')]
  assert len(queries) == 4 * 2 and len(set(queries)) == 4


def test_split_folders_are_taken_as_they_are(tmp_path):
  root = str(tmp_path / 'photos')
  _tree(root, identities=4, per_identity=3,
        split_of=lambda i: 'gallery' if i < 3 else 'query')
  _photo(os.path.join(root, 'query', 'nyala_0', 'q.png'), seed=99)
  out = str(tmp_path / 'out')
  summary = convert.convert(convert.ConvertConfig(images=root, out=out,
                                                  progress=False))
  # No train folder: the gallery is also the train split, stored once.
  assert [summary['splits'][s]['images'] for s in records.SPLITS] == [9, 9, 4]
  names = [e['name'].numpy().decode() for e in _examples(out, 'gallery')]
  assert sorted(set(names)) == ['nyala_0', 'nyala_1', 'nyala_2']
  assert [e['path'].numpy().decode() for e in _examples(out, 'query')][0] == (
      'query/nyala_0/q.png')

  root2 = str(tmp_path / 'photos2')
  _tree(root2, identities=6, per_identity=4,
        split_of=lambda i: 'train' if i < 4 else 'test')
  out2 = str(tmp_path / 'out2')
  summary = convert.convert(convert.ConvertConfig(images=root2, out=out2,
                                                  progress=False))
  # train/ test/: the test identities split into 2 gallery photos + queries.
  assert [summary['splits'][s]['images'] for s in records.SPLITS] == [
      16, 16 + 4, 4]
  assert records.read_metadata(out2).splits['train']['num_classes'] == 4


def test_mixed_split_and_identity_folders_is_an_error(tmp_path):
  _photo(tmp_path / 'p' / 'train' / 'a' / '1.png')
  _photo(tmp_path / 'p' / 'zebra' / '1.png')
  with pytest.raises(Exception, match='split folders .* and other folders'):
    convert.convert(convert.ConvertConfig(images=str(tmp_path / 'p'),
                                          out=str(tmp_path / 'o'),
                                          progress=False))


def test_bad_files_in_a_folder_are_rejected_or_noted(tmp_path):
  root = tmp_path / 'photos'
  _tree(str(root), identities=3, per_identity=2)
  (root / 'nyala_0' / 'notes.txt').write_text('seen at the waterhole')
  (root / 'stray.jpg').write_bytes(b'')
  liar = _photo(root / 'nyala_1' / 'liar.png', seed=5, ext_format='.jpg')
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(images=str(root), out=out,
                                        test_fraction=0.0, progress=False))
  rows = {r['path']: r for r in _rejects(out)}
  assert rows['nyala_0/notes.txt']['reason'].startswith('undecodable image')
  assert rows['nyala_0/notes.txt']['kept'] == 'no'
  assert rows['stray.jpg']['reason'].startswith('not in an identity folder')
  note = rows['nyala_1/liar.png']
  assert note['kept'] == 'yes'
  assert note['reason'] == ("extension '.png' but the content is JPEG; "
                            'decoded by content')
  kept = {e['path'].numpy(): e for e in _examples(out, 'train')}
  stored = tf.io.decode_image(kept[b'nyala_1/liar.png']['encoded']).numpy()
  assert stored.shape == liar.shape
  assert len(kept) == 7


def _csv(path, header, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def test_box_crop_and_moved_landmarks_value_by_value(tmp_path):
  image = _photo(tmp_path / 'herd.png', width=60, height=40, seed=3)
  _photo(tmp_path / 'other.png', seed=4)
  header = ['path', 'identity', 'eye_x', 'eye_y', 'box_x0', 'box_y0',
            'box_x1', 'box_y1']
  path = _csv(tmp_path / 'a.csv', header, [
      # Two animals in one photo; margin 0.1: box 10..30 x 5..25 grows by
      # 2 px each side -> region 8..32 x 3..27.
      ['herd.png', 'a', '12', '9', '10', '5', '30', '25'],
      # Box 40..60 x 20..40 grows past the photo: clipped to 38..60 x 18..40.
      ['herd.png', 'b', '50', '30', '40', '20', '60', '40'],
      ['other.png', 'a', '5', '5', '', '', '', ''],
      ['other.png', 'b', '6', '6', '0', '0', '10', '10'],
  ])
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(annotations=path, out=out,
                                        test_fraction=0.0, progress=False))
  examples = {(e['name'].numpy(), e['path'].numpy()): e
              for e in _examples(out, 'train')}
  a = examples[b'a', b'herd.png']
  np.testing.assert_array_equal(a['source_box'].numpy(), [8, 3, 32, 27])
  crop = tf.io.decode_png(a['encoded']).numpy()
  np.testing.assert_array_equal(crop, image[3:27, 8:32, ::-1])
  np.testing.assert_allclose(a['landmarks'].numpy(),
                             [[(12 - 8) / 24, (9 - 3) / 24]], rtol=1e-6)
  b = examples[b'b', b'herd.png']
  np.testing.assert_array_equal(b['source_box'].numpy(), [38, 18, 60, 40])
  np.testing.assert_array_equal(tf.io.decode_png(b['encoded']).numpy(),
                                image[18:40, 38:60, ::-1])
  np.testing.assert_allclose(b['landmarks'].numpy(),
                             [[12 / 22, 12 / 22]], rtol=1e-6)
  whole = examples[b'a', b'other.png']
  np.testing.assert_array_equal(whole['source_box'].numpy(), [0, 0, 40, 30])
  np.testing.assert_allclose(whole['landmarks'].numpy(), [[5 / 40, 5 / 30]])


def test_box_rejects(tmp_path):
  for name in ('p.png', 'q.png', 'r.png'):
    _photo(tmp_path / name)
  header = ['path', 'identity', 'box_x0', 'box_y0', 'box_x1', 'box_y1']
  path = _csv(tmp_path / 'a.csv', header, [
      ['p.png', 'a', '0', '0', '10', '10'],
      ['p.png', 'a', '5', '5', '5', '20'],       # line 3: zero area
      ['q.png', 'a', '30', '0', '50', '10'],     # line 4: past the 40 px edge
      ['q.png', 'a', '0', '0', '10', ''],        # line 5: incomplete
      ['r.png', 'a', '1', '1', '20', '20'],
  ])
  out = str(tmp_path / 'out')
  summary = convert.convert(convert.ConvertConfig(
      annotations=path, out=out, test_fraction=0.0, progress=False))
  reasons = {r['where'].rsplit(':', 1)[1]: r['reason'] for r in _rejects(out)}
  assert reasons['3'].startswith('box of zero area: (5, 5, 5, 20)')
  assert reasons['4'] == ('box outside the photo: (30, 0, 50, 10) in a 40x30 '
                          'photo')
  assert reasons['5'].startswith('incomplete box')
  assert summary['rejected'] == 3


def test_viewpoints_and_encounters_from_date_and_location(tmp_path):
  for i in range(4):
    _photo(tmp_path / f'{i}.png', seed=i)
  header = ['path', 'identity', 'viewpoint', 'date', 'location']
  path = _csv(tmp_path / 'a.csv', header, [
      ['0.png', 'a', 'left', '2024-03-01 10:00', 'pan'],
      ['1.png', 'a', 'left', '2024-03-01T16:30', 'pan'],
      ['2.png', 'a', 'right', '2024-03-02', 'pan'],   # one-photo encounter
      ['3.png', 'a', 'top', '2024-03-01', 'pan'],     # not an allowed value
  ])
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(
      annotations=path, out=out, test_fraction=0.0,
      viewpoints=('left', 'right'), progress=False))
  got = [(e['path'].numpy(), e['viewpoint'].numpy(), e['encounter'].numpy())
         for e in _examples(out, 'train')]
  assert got == [(b'0.png', b'left', b'pan@2024-03-01'),
                 (b'1.png', b'left', b'pan@2024-03-01'),
                 (b'2.png', b'right', b'pan@2024-03-02')]
  rejects = {r['path']: r for r in _rejects(out)}
  assert rejects['3.png']['reason'] == ("viewpoint 'top' is not one of "
                                        '--viewpoints (left, right)')
  assert rejects['2.png']['kept'] == 'yes'
  assert rejects['2.png']['reason'].startswith(
      "encounter 'pan@2024-03-02' has one photo (kept")


def test_coco_identity_only_with_boxes_and_viewpoints(tmp_path):
  image = _photo(tmp_path / 'a.png', width=50, height=40, seed=1)
  _photo(tmp_path / 'b.png', seed=2)
  coco = {'images': [{'id': 1, 'file_name': 'a.png'},
                     {'id': 2, 'file_name': 'b.png'}],
          'categories': [{'id': 1, 'name': 'nyala'}],
          'annotations': [
              {'image_id': 1, 'bbox': [10, 10, 20, 10], 'identity': 'x',
               'viewpoint': 'left'},
              {'image_id': 2, 'bbox': [0, 0, 40, 30], 'identity': 'x',
               'viewpoint': 'right'}]}
  (tmp_path / 'c.json').write_text(json.dumps(coco))
  out = str(tmp_path / 'out')
  convert.convert(convert.ConvertConfig(annotations=str(tmp_path / 'c.json'),
                                        out=out, test_fraction=0.0,
                                        box_margin=0.0, progress=False))
  first, second = _examples(out, 'train')
  assert records.read_metadata(out).num_landmarks == 0
  np.testing.assert_array_equal(tf.io.decode_png(first['encoded']).numpy(),
                                image[10:20, 10:30, ::-1])
  assert (first['viewpoint'].numpy(), second['viewpoint'].numpy()) == (
      b'left', b'right')


@pytest.mark.parametrize('seed', range(20))
def test_an_encounter_never_straddles_gallery_and_query(seed):
  rng = np.random.default_rng(seed)
  identities = {f'id{i}': [f'e{i}_{e}' for e in rng.integers(0, 4, 9)]
                for i in range(10)}
  assigned = splits.assign(identities, test_fraction=0.5,
                           gallery_per_identity=2, seed=seed)
  tested = 0
  for name, encounters in identities.items():
    sides = {}
    for encounter, split in zip(encounters, assigned[name]):
      sides.setdefault(encounter, set()).add(split)
    assert all(len(s) == 1 for s in sides.values()), (name, sides)
    if 'query' in assigned[name]:
      tested += 1
      assert sum(s == {'gallery'} for s in sides.values()) == 2
  assert tested == 5


def test_stored_size_is_bounded_and_decoded_reduced(tmp_path):
  rng = np.random.default_rng(0)
  big = cv2.GaussianBlur((rng.random((1200, 1600, 3)) * 255).astype(
      np.uint8), (0, 0), 8)
  data = cv2.imencode('.jpg', big)[1].tobytes()
  stored = photos.store(data, 'big.jpg', None, [(800.0, 600.0)], 0.1, 256)
  assert (stored.width, stored.height) == (256, 192)
  decoded = tf.io.decode_jpeg(stored.encoded).numpy()
  assert decoded.shape == (192, 256, 3)
  # 1600 / 4 = 400 >= 256 > 1600 / 8: decoded at 1/4, then resized.
  assert crops.reduction(1600, 1200, 256) == 4
  reference = cv2.resize(big, (256, 192), interpolation=cv2.INTER_AREA)
  assert np.abs(decoded[..., ::-1].astype(float) - reference).mean() < 2.0
  np.testing.assert_allclose([stored.xs[0], stored.ys[0]], [0.5, 0.5])
  small = photos.store(data, 'big.jpg', None, [], 0.1, 0)
  assert (small.width, small.height) == (1600, 1200)
  assert small.encoded == data       # unchanged bytes when nothing changes
  assert crops.stored_shape(100, 50, 512) == (100, 50)

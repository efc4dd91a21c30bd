"""The landmark predictor: decoder, losses, learning, evaluation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_train_config
from lmid_tf.modeling import landmark_model
from lmid_tf.data import pipeline
from lmid_tf import train_landmarks


def test_soft_argmax_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7, 3)).astype(np.float32) * 3
  got = landmark_model.soft_argmax(tf.constant(logits)).numpy()
  for b in range(2):
    for k in range(3):
      weights = np.exp(logits[b, :, :, k] - logits[b, :, :, k].max())
      weights /= weights.sum()
      ys, xs = np.mgrid[0:5, 0:7]
      expected = [((xs + 0.5) / 7 * weights).sum(),
                  ((ys + 0.5) / 5 * weights).sum()]
      np.testing.assert_allclose(got[b, k], expected, atol=1e-6)
  # A sharp peak decodes to that pixel's centre.
  peak = np.full((1, 4, 4, 1), -50.0, np.float32)
  peak[0, 1, 3, 0] = 50.0
  np.testing.assert_allclose(
      landmark_model.soft_argmax(tf.constant(peak)).numpy()[0, 0],
      [3.5 / 4, 1.5 / 4], atol=1e-6)


def test_local_soft_argmax_stays_on_the_stronger_of_two_modes():
  logits = np.full((1, 9, 9, 1), -30.0, np.float32)
  logits[0, 1, 1, 0], logits[0, 7, 7, 0] = 10.0, 9.5      # two corners
  both = landmark_model.soft_argmax(tf.constant(logits)).numpy()[0, 0]
  local = landmark_model.soft_argmax(tf.constant(logits), 2).numpy()[0, 0]
  assert 0.3 < both[0] < 0.7                   # between them: on neither
  np.testing.assert_allclose(local, [1.5 / 9, 1.5 / 9], atol=1e-5)
  # Within the window it is the plain expectation (numpy reference).
  logits[0, 1, 2, 0] = 10.0
  local = landmark_model.soft_argmax(tf.constant(logits), 2).numpy()[0, 0]
  np.testing.assert_allclose(local, [2.0 / 9, 1.5 / 9], atol=1e-5)


def test_landmark_loss_counts_only_visible_landmarks():
  predicted = tf.constant([[[0.1, 0.1], [0.5, 0.5]]])
  target = tf.constant([[[0.2, 0.3], [0.9, 0.9]]])
  loss = landmark_model.landmark_loss(predicted, target, [[1.0, 0.0]])
  assert float(loss) == pytest.approx(0.1 + 0.2)


def test_landmark_errors_exact_values():
  annotated = np.array([[[0.5, 0.5], [0.2, 0.2], [0.0, 0.0]]])
  predicted = np.array([[[0.5, 0.54], [0.2, 0.32], [0.9, 0.9]]])
  errors = train_landmarks.landmark_errors(
      predicted, np.array([[0.9, 0.8, 0.7]]), annotated,
      np.array([[1, 1, 0]]))
  assert errors['mean'] == pytest.approx((4 + 12) / 2)
  assert errors['median'] == pytest.approx(8)
  assert errors['pck5'] == 0.5 and errors['pck10'] == 0.5
  assert errors['visibility_accuracy'] == pytest.approx(2 / 3)


def test_refined_landmarks_snap_only_confident_near_visible_clicks():
  clicks = np.array([[[0.5, 0.5], [0.2, 0.2], [0.8, 0.3], [0.0, 0.0]],
                     [[0.3, 0.7], [0.6, 0.1], [0.5, 0.5], [0.9, 0.9]]],
                    np.float32)
  visible = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
  prediction = {
      'landmarks': tf.constant(
          [[[0.55, 0.45], [0.6, 0.6], [0.82, 0.31], [0.05, 0.0]],
           [[0.3, 0.6], [0.6, 0.3], [0.52, 0.5], [0.9, 0.95]]]),
      'visibility': tf.constant([[0.9, 0.9, 0.3, 0.99],
                                 [0.6, 0.99, 0.5, 0.51]])}
  expected = np.array(
      # snapped (0.07 away, 0.9); kept (0.57 away); kept (confidence 0.3);
      # hidden: stays at 0 though the predictor is sure and near.
      [[[0.55, 0.45], [0.2, 0.2], [0.8, 0.3], [0.0, 0.0]],
       # snapped (0.1 away); kept (0.2 away > 0.15); kept (0.5 is not
       # above 0.5); snapped (0.05 away, 0.51).
       [[0.3, 0.6], [0.6, 0.1], [0.5, 0.5], [0.9, 0.95]]], np.float32)
  refine = tf.function(lambda c, v: landmark_model.refined_landmarks(
      c, v, prediction, 0.15))
  for got in (landmark_model.refined_landmarks(clicks, visible, prediction,
                                               0.15),
              refine(tf.constant(clicks), tf.constant(visible))):
    np.testing.assert_array_equal(got.numpy(), expected)
  # A wider radius reaches the 0.2-away landmark; a lower bar takes 0.3.
  wide = landmark_model.refined_landmarks(clicks, visible, prediction, 0.25,
                                          min_confidence=0.2).numpy()
  f32 = lambda *xy: np.array(xy, np.float32)
  np.testing.assert_array_equal(wide[1, 1], f32(0.6, 0.3))
  np.testing.assert_array_equal(wide[0, 2], f32(0.82, 0.31))
  np.testing.assert_array_equal(wide[0, 1], f32(0.2, 0.2))  # 0.57: still far
  np.testing.assert_array_equal(wide[0, 3], f32(0.0, 0.0))  # still hidden
  assert landmark_model.REFINE_RADIUS == 0.15


def test_a_few_steps_reduce_the_error_and_blank_photos_score_low(
    tiny_dataset, tmp_path):
  keras.utils.set_random_seed(0)     # a fixed start: the bar below is fixed
  cfg = tiny_train_config(tiny_dataset, str(tmp_path), steps_per_epoch=8,
                          image_size=32, rotation=0.0,
                          schedule='a trains=all lr=3e-3 epochs=4')
  pre, inputs = train_landmarks.predictor_config(cfg)
  net = landmark_model.build_landmark_model(
      landmark_model.LandmarkModelConfig(32, 1, 3, width=16))
  trainer = landmark_model.LandmarkTrainer(net)
  trainer.compile(keras.optimizers.Adam(3e-3))
  history = trainer.fit(pipeline.train_dataset(tiny_dataset, pre, inputs),
                        epochs=6, steps_per_epoch=8, verbose=0).history
  assert history['landmark_loss'][-1] < 0.8 * history['landmark_loss'][0]
  # Blank frames (trained as negatives) score lower than real photos.
  real = next(iter(pipeline.train_dataset(tiny_dataset, pre, inputs)))[0]
  blank = landmark_model.no_animal(real['image'], tf.constant([1, 2]))
  assert float(tf.reduce_mean(net(blank)['visibility'])) < float(
      tf.reduce_mean(net(real['image'])['visibility']))


def test_train_landmarks_writes_model_and_errors(trained_landmark_model):
  import json
  import os
  from lmid_tf import artifacts
  run_dir = os.path.dirname(trained_landmark_model)
  pre = artifacts.model_preprocess(trained_landmark_model)
  assert pre.landmark_names == ('apex', 'base_left', 'base_right')
  assert not pre.template and not pre.heatmap_channels
  with open(os.path.join(run_dir, 'eval', 'landmarks.json')) as f:
    results = json.load(f)
  assert set(results) == {'predictor', 'mean_shape'}
  assert results['predictor']['landmarks'] > 0
  assert os.path.getsize(os.path.join(run_dir, 'eval', 'landmarks.png')) > 1000


def test_a_predictor_for_other_landmarks_is_refused(trained_landmark_model):
  import dataclasses
  from lmid_tf import artifacts
  pre = artifacts.model_preprocess(trained_landmark_model)
  other = dataclasses.replace(pre, landmark_names=('eye', 'fin', 'tail'))
  with pytest.raises(ValueError, match=r"trained for landmarks \['apex', "
                     r"'base_left', 'base_right'\], the re-ID model takes "
                     r"\['eye', 'fin', 'tail'\]"):
    landmark_model.check_combination(other, pre)
  landmark_model.check_combination(pre, pre)


def test_heatmap_loss_is_lowest_at_the_true_position():
  target = tf.constant([[[0.3, 0.6]]])
  ys, xs = np.mgrid[0:8, 0:8]

  def peaked(x, y):
    d2 = (xs + 0.5 - x * 8) ** 2 + (ys + 0.5 - y * 8) ** 2
    return tf.constant((-d2 / 2.0)[None, :, :, None], tf.float32)

  right = landmark_model.heatmap_loss(peaked(0.3, 0.6), target, [[1.0]])
  wrong = landmark_model.heatmap_loss(peaked(0.7, 0.2), target, [[1.0]])
  assert float(right) < float(wrong)
  assert float(landmark_model.heatmap_loss(peaked(0.7, 0.2), target,
                                           [[0.0]])) == 0.0


@pytest.mark.slow
def test_records_get_the_predicted_landmarks_and_train_on_them(
    trained_landmark_model, tiny_dataset, tmp_path, capsys):
  from lmid_tf.data import records
  from lmid_tf import train
  predictor = landmark_model.load(trained_landmark_model)
  metadata, serialized, _ = pipeline.load_train_records(tiny_dataset)
  rewritten = landmark_model.with_predicted_landmarks(serialized[:5],
                                                      predictor, batch_size=2)
  k = metadata.num_landmarks
  before = records.parse(tf.constant(list(serialized[:5])), k)
  after = records.parse(tf.constant(rewritten), k)
  found = landmark_model.predict_encoded(*predictor, before['encoded'])
  visible = (found['visibility'].numpy() > landmark_model.VISIBLE)
  np.testing.assert_array_equal(after['visible'], visible)
  np.testing.assert_allclose(
      after['landmarks'], found['landmarks'].numpy() * visible[..., None],
      atol=1e-6)
  for field in ('encoded', 'label', 'name', 'path'):
    np.testing.assert_array_equal(after[field], before[field])

  cfg = tiny_train_config(tiny_dataset, str(tmp_path), steps_per_epoch=1,
                          train_landmark_model=trained_landmark_model)
  assert train.train(cfg)['queries'] > 0
  assert 'landmarks of the train split from' in capsys.readouterr().out


def test_train_landmarks_refuses_the_settings_it_would_ignore():
  from absl import flags
  from lmid_tf import config
  values = flags.FlagValues()
  config.define_flags(values, names=train_landmarks.PREDICTOR_SETTINGS)
  values(['train_landmarks', '--image_size=48', '--rotation=0.1'])
  settings = config.from_flags(values, train_landmarks.PREDICTOR_SETTINGS)
  assert (settings.image_size, settings.rotation) == (48, 0.1)
  assert settings.backbone == config.Settings().backbone   # not a flag here
  with pytest.raises(flags.UnrecognizedFlagError):
    values(['train_landmarks', '--backbone=small_cnn'])
  with pytest.raises(ValueError, match='not settings'):
    config.define_flags(flags.FlagValues(), names=('imagesize',))


def _parsed(folder, split):
  from lmid_tf.data import records
  metadata = records.read_metadata(folder)
  _, serialized = records.read_split(folder, split)
  return [{k: v.numpy() for k, v in records.parse(
      tf.constant(s), metadata.num_landmarks).items()} for s in serialized]


def test_convert_predicts_landmarks_where_none_were_clicked(
    trained_landmark_model, tiny_dataset, tmp_path):
  import csv
  import os
  from data_tools import convert
  from data_tools import predicted_landmarks
  from lmid_tf.data import records
  root = os.path.dirname(tiny_dataset)
  with open(os.path.join(root, 'annotations.csv')) as f:
    rows = list(csv.DictReader(f))
  points = [c for c in rows[0] if c.endswith(('_x', '_y', '_visible'))]
  clicked = rows[0]['path']
  for row in rows[1:]:
    row.update({c: '' for c in points})
  predictor = predicted_landmarks.Predictor(trained_landmark_model)

  def converted(name, columns):
    path = tmp_path / f'{name}.csv'
    with open(path, 'w', newline='') as f:
      writer = csv.DictWriter(f, columns, extrasaction='ignore')
      writer.writeheader()
      writer.writerows(rows)
    out = str(tmp_path / name)
    summary = convert.convert(convert.ConvertConfig(
        annotations=str(path), images_root=root, out=out,
        split_column='split', workers=1, progress=False,
        landmark_model=trained_landmark_model))
    return out, summary

  # Identity-only (K = 0): every photo gets the predictor's landmarks.
  out, summary = converted('identity_only', ['path', 'identity', 'split'])
  assert records.read_metadata(out).landmark_names == predictor.names
  query = _parsed(out, 'query')
  xs, ys, visible = predictor([r['encoded'] for r in query])
  np.testing.assert_allclose([r['landmarks'] for r in query],
                             np.stack([xs, ys], -1), atol=1e-6)
  np.testing.assert_array_equal([r['visible'] for r in query], visible)
  assert {r['landmark_source'] for r in query} == {b'predicted'}
  assert summary['splits']['query']['landmark_sources'] == {
      'predicted': len(query)}

  # One photo with clicked landmarks keeps them; the others are predicted.
  out, summary = converted('one_clicked', list(rows[0]))
  train = _parsed(out, 'train')
  given = {r['path']: r for r in _parsed(tiny_dataset, 'train')}
  for record in train:
    if record['path'].decode() == clicked:
      assert record['landmark_source'] == b'annotated'
      np.testing.assert_array_equal(record['landmarks'],
                                    given[record['path']]['landmarks'])
    else:
      assert record['landmark_source'] == b'predicted'
  assert summary['splits']['train']['landmark_sources'] == {
      'annotated': 1, 'predicted': len(train) - 1}

  renamed = [c.replace(points[0].rsplit('_', 1)[0], 'fin') for c in rows[0]]
  for row in rows:
    row.update({new: row[old] for old, new in zip(list(rows[0]), renamed)})
  with pytest.raises(convert.ConversionError, match='must be the same'):
    converted('renamed', renamed)
  with pytest.raises(convert.ConversionError, match='no such file'):
    convert.convert(convert.ConvertConfig(
        annotations=str(tmp_path / 'identity_only.csv'), images_root=root,
        out=str(tmp_path / 'x'), landmark_model=str(tmp_path / 'none.keras')))


def test_bootstrap_clicks_whole_individuals_and_blanks_the_rest():
  from benchmarks import landmark_bootstrap
  rows = [{'path': f'{split}/{who}_{n}.png', 'identity': who, 'split': split,
           'eye_x': '1.0', 'eye_y': '2.0', 'eye_visible': '1'}
          for split, people in (('train', 'abcd'), ('query', 'x'))
          for who in people for n in range(2 if who != 'd' else 4)]
  predictor, collection, clicked = landmark_bootstrap.bootstrap_rows(
      rows, 0.25, seed=0)
  train = [r for r in predictor if r['split'] == 'train']
  # 10 train photos: identities are drawn whole until 2.5 are clicked, and
  # not one more (a, b, c have 2 photos, d 4).
  chosen = {r['identity'] for r in train}
  assert clicked == len(train) >= 2.5
  assert any(clicked - (4 if who == 'd' else 2) < 2.5 for who in chosen)
  assert all(len([r for r in train if r['identity'] == who]) ==
             (4 if who == 'd' else 2) for who in chosen)
  assert [r for r in predictor if r['split'] == 'query'] == rows[-2:]
  kept = [r for r in collection if r['eye_x']]
  assert kept == train
  assert len(collection) == len(rows)
  assert all(r['eye_x'] == r['eye_y'] == r['eye_visible'] == ''
             for r in collection if r not in train)
  everything = landmark_bootstrap.bootstrap_rows(rows, 1.0, seed=0)
  assert everything[2] == 10 and everything[1][:10] == rows[:10]

"""SavedModel export: layout, signatures, equality with the Keras model."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from lmid_tf import artifacts
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess
from lmid_tf.evaluation import retrieval
from serving import export


@pytest.fixture(scope='module')
def exported(trained_run, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('export'))
  path = export.export(os.path.join(trained_run, 'embedding_model.keras'),
                       base)
  return trained_run, base, path


def _pre(run_dir):
  with open(os.path.join(run_dir, 'preprocess.json')) as f:
    return preprocess.PreprocessConfig.from_json(f.read())


def test_versioned_layout_never_overwrites(exported):
  run_dir, base, path = exported
  assert path == os.path.join(base, '1')
  for name in ('saved_model.pb', 'variables',
               'assets.extra/tf_serving_warmup_requests',
               'assets.extra/preprocess.json'):
    assert os.path.exists(os.path.join(path, name)), name
  second = export.export(os.path.join(run_dir, 'embedding_model.keras'), base)
  assert second == os.path.join(base, '2')
  with pytest.raises(ValueError, match='never overwritten'):
    export.export(os.path.join(run_dir, 'embedding_model.keras'), base, 1)
  assert not [d for d in os.listdir(base) if d.startswith('.tmp')]


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(exported):
  _, _, path = exported
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  shown = subprocess.run([cli, 'show', '--all', '--dir', path],
                         capture_output=True, text=True, check=True).stdout
  for text in ("signature_def['serving_default']",
               "signature_def['preprocessed']", "inputs['images']",
               "inputs['landmarks']", "inputs['visibility']",
               "inputs['heatmaps']", "outputs['embedding']",
               'shape: (-1, 3, 2)', 'dtype: DT_STRING'):
    assert text in shown, text


def test_outputs_equal_the_keras_model(exported, tiny_dataset):
  """Also with alignment: the fixture's model aligns its inputs."""
  run_dir, _, path = exported
  pre = _pre(run_dir)
  assert pre.template
  embedder = keras.saving.load_model(
      os.path.join(run_dir, 'embedding_model.keras'))
  loaded = tf.saved_model.load(path)
  batch = next(iter(pipeline.eval_dataset(tiny_dataset, 'query', pre, 6)))
  inputs = {'image': batch['image'], 'heatmaps': batch['heatmaps']}
  expected = embedder(inputs, training=False)['embedding'].numpy()
  got = loaded.signatures['preprocessed'](**inputs)['embedding'].numpy()
  assert np.abs(got - expected).max() <= 1e-5

  # serving_default: encoded bytes + pixel landmarks, preprocessing in-graph.
  records = list(tf.data.TFRecordDataset(
      pipeline.records.read_metadata(tiny_dataset).shard_paths(
          tiny_dataset, 'query')).take(6))
  parsed = [pipeline.records.parse(r, 3) for r in records]
  encoded = tf.stack([p['encoded'] for p in parsed])
  size = tf.cast(tf.stack([tf.shape(tf.io.decode_image(p['encoded']))[:2]
                           for p in parsed]), tf.float32)
  pixels = tf.stack([p['landmarks'] for p in parsed]) * tf.reverse(
      size, [1])[:, None, :]
  visible = tf.stack([p['visible'] for p in parsed])
  served = loaded.signatures['serving_default'](
      images=encoded, landmarks=pixels, visibility=visible)['embedding']
  assert np.abs(served.numpy() - expected).max() <= 1e-5


def test_bfloat16_export_is_within_its_stated_tolerance(exported, tiny_dataset,
                                                       tmp_path):
  """--precision=bfloat16: the backbone's convolutions run in bfloat16, and
  the embedding stays within 0.02 (L2 of a unit vector) of float32's."""
  run_dir, _, float32_path = exported
  path = export.export(os.path.join(run_dir, 'embedding_model.keras'),
                       str(tmp_path), serving_precision='bfloat16')
  pre = _pre(run_dir)
  batch = next(iter(pipeline.eval_dataset(tiny_dataset, 'query', pre, 16)))
  inputs = {'image': batch['image'], 'heatmaps': batch['heatmaps']}
  embed = lambda p: tf.saved_model.load(p).signatures['preprocessed'](
      **inputs)['embedding']
  half, full = embed(path), embed(float32_path)
  assert half.dtype == tf.float32
  shift = np.linalg.norm(half.numpy() - full.numpy(), axis=1)
  assert 0 < shift.max() <= 0.02, shift.max()
  graph = tf.saved_model.load(path).signatures['preprocessed'].graph
  convolutions = [
      node.attr['T'].type for f in graph.as_graph_def().library.function
      for node in f.node_def if 'Conv2D' in node.op]
  assert tf.bfloat16.as_datatype_enum in convolutions
  with pytest.raises(ValueError, match='--precision=float16: one of'):
    export.export(os.path.join(run_dir, 'embedding_model.keras'),
                  str(tmp_path), serving_precision='float16')


@pytest.mark.parametrize('variant,settings,inputs', [
    ('baseline', {}, {'images'}),
    # Alignment alone: landmarks in, but no heatmap channels.
    pytest.param('landmark_id', {'align': True, 'heatmap_channels': False},
                 {'images', 'landmarks', 'visibility'},
                 marks=pytest.mark.slow),
])
def test_exports_without_heatmap_channels(tiny_dataset, tmp_path, variant,
                                          settings, inputs):
  from conftest import tiny_train_config
  from lmid_tf import train
  cfg = tiny_train_config(tiny_dataset, str(tmp_path / 'run'),
                          variant=variant, steps_per_epoch=1,
                          schedule='a trains=all lr=1e-3 epochs=1', **settings)
  assert cfg.model.num_landmarks == 0
  assert train.train(cfg)['queries'] == 24   # trains and evaluates
  path = export.export(str(tmp_path / 'run' / 'embedding_model.keras'),
                       str(tmp_path / 'export'))
  loaded = tf.saved_model.load(path)
  signature = loaded.signatures['serving_default']
  assert set(signature.structured_input_signature[1]) == inputs
  assert set(loaded.signatures['preprocessed'].structured_input_signature[1]
             ) == {'image'}
  png = tf.io.encode_png(tf.zeros([40, 20, 1], tf.uint8))
  request = {'images': tf.stack([png, png])}
  if 'landmarks' in inputs:
    request['landmarks'] = tf.constant([[[5., 5.], [15., 5.], [10., 30.]]] * 2)
    request['visibility'] = tf.ones([2, 3])
  out = signature(**request)['embedding']
  assert out.shape == (2, cfg.model.embedding_dim)
  # The served chain equals the Keras model on the same preprocessing.
  embedder = keras.saving.load_model(str(tmp_path / 'run' /
                                         'embedding_model.keras'))
  expected = embedder(preprocess.encoded_inputs(
      request['images'], request.get('landmarks'), request.get('visibility'),
      cfg.preprocess), training=False)['embedding']
  assert np.abs(out.numpy() - expected.numpy()).max() <= 1e-5


@pytest.mark.slow
def test_export_cli_and_evaluate_on_the_export(exported, tiny_dataset,
                                               tmp_path):
  run_dir, base, _ = exported
  result = subprocess.run(
      [sys.executable, '-m', 'serving.export', f'--run_dir={run_dir}',
       f'--export_base={tmp_path}/e'], cwd=REPO, capture_output=True,
      text=True)
  assert result.returncode == 0, result.stderr
  assert f'wrote {tmp_path}/e/1' in result.stdout
  embed_fn, pre = artifacts.load_embedder(base)    # newest version
  assert pre == _pre(run_dir)
  served = retrieval.evaluate(embed_fn, tiny_dataset, pre)
  keras_fn, _ = artifacts.load_embedder(
      os.path.join(run_dir, 'embedding_model.keras'))
  in_keras = retrieval.evaluate(keras_fn, tiny_dataset, pre)
  # The export folds batch norms into convolutions, so embeddings agree to
  # float rounding, not bit for bit; an untrained model has near-tied
  # distances whose ranks such rounding may swap, so compare the numbers
  # the ranks come from. By the triangle inequality no distance may move by
  # more than the largest query shift plus the largest gallery shift.
  shift = 0.0
  for side in ('gallery', 'query'):
    ours = getattr(served, side)['embeddings']
    theirs = getattr(in_keras, side)['embeddings']
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    shift += np.linalg.norm(ours - theirs, axis=1).max()
  assert np.abs(served.distances - in_keras.distances).max() <= shift + 1e-9
  assert served.metrics['queries'] == in_keras.metrics['queries'] == 24
  missing = subprocess.run(
      [sys.executable, '-m', 'serving.export', f'--run_dir={tmp_path}/none'],
      cwd=REPO, capture_output=True, text=True)
  assert missing.returncode == 1 and 'export: error' in missing.stderr


def test_images_only_signature_equals_the_keras_chain(
    trained_run, trained_landmark_model, tiny_dataset, tmp_path):
  path = export.export(os.path.join(trained_run, 'embedding_model.keras'),
                       str(tmp_path / 'export'),
                       landmark_model_path=trained_landmark_model)
  loaded = tf.saved_model.load(path)
  signature = loaded.signatures['images_only']
  assert set(signature.structured_input_signature[1]) == {'images'}
  records = list(tf.data.TFRecordDataset(
      pipeline.records.read_metadata(tiny_dataset).shard_paths(
          tiny_dataset, 'query')).take(4))
  encoded = tf.stack([pipeline.records.parse(r, 3)['encoded']
                      for r in records])
  served = signature(images=encoded)
  # The same chain in Keras: predict, threshold, render, embed.
  from lmid_tf.modeling import landmark_model
  net, predictor_pre = landmark_model.load(trained_landmark_model)
  pre = _pre(trained_run)
  found = landmark_model.predict_encoded(net, predictor_pre, encoded)
  visible = tf.cast(found['visibility'] > 0.5, tf.float32)
  images, sizes = preprocess.decode_batch(encoded, pre)
  embedder = keras.saving.load_model(
      os.path.join(trained_run, 'embedding_model.keras'))
  expected = embedder(preprocess.model_inputs(
      images, found['landmarks'] * visible[..., None], visible, pre),
      training=False)['embedding']
  assert np.abs(served['embedding'].numpy() - expected.numpy()).max() <= 1e-5
  np.testing.assert_allclose(served['confidence'], found['visibility'],
                             atol=1e-5)
  pixels = found['landmarks'] * visible[..., None] * tf.reverse(
      sizes, [1])[:, None, :]
  np.testing.assert_allclose(served['landmarks'], pixels, atol=1e-3)


def test_refined_landmarks_signature_equals_the_function_by_hand(
    trained_run, confident_landmark_model, tiny_dataset, tmp_path):
  from lmid_tf.modeling import landmark_model
  path = export.export(os.path.join(trained_run, 'embedding_model.keras'),
                       str(tmp_path / 'export'),
                       landmark_model_path=confident_landmark_model,
                       refine_radius=0.15)
  signature = tf.saved_model.load(path).signatures['refined_landmarks']
  assert set(signature.structured_input_signature[1]) == {
      'images', 'landmarks', 'visibility'}
  assert set(signature.structured_outputs) == {'embedding', 'landmarks'}
  records = list(tf.data.TFRecordDataset(
      pipeline.records.read_metadata(tiny_dataset).shard_paths(
          tiny_dataset, 'query')).take(4))
  encoded = tf.stack([pipeline.records.parse(r, 3)['encoded']
                      for r in records])
  pre = _pre(trained_run)
  images, sizes = preprocess.decode_batch(encoded, pre)
  net, predictor_pre = landmark_model.load(confident_landmark_model)
  found = landmark_model.predict_encoded(net, predictor_pre, encoded)
  assert np.all(found['visibility'].numpy() > 0.99)
  # Clicks around the predictions: landmark 0 near (0.03 away: snaps),
  # landmark 1 far (0.3: kept), landmark 2 near but hidden on two photos.
  offsets = np.array([[0.03, 0.0], [0.3, 0.0], [0.0, 0.03]], np.float32)
  clicks = found['landmarks'].numpy() + offsets
  visibility = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]],
                        np.float32)
  wh = tf.reverse(sizes, [1])[:, None, :].numpy()
  served = {k: v.numpy() for k, v in signature(
      images=encoded, landmarks=tf.constant(clicks * wh),
      visibility=tf.constant(visibility)).items()}
  # By hand: refine, then embed as serving_default does.
  refined = landmark_model.refined_landmarks(clicks, visibility, found, 0.15)
  embedder = keras.saving.load_model(
      os.path.join(trained_run, 'embedding_model.keras'))
  expected = embedder(preprocess.model_inputs(images, refined, visibility,
                                              pre),
                      training=False)['embedding']
  assert np.abs(served['embedding'] - expected.numpy()).max() <= 1e-5
  np.testing.assert_allclose(served['landmarks'], refined.numpy() * wh,
                             atol=1e-3)
  snapped = found['landmarks'].numpy() * wh
  np.testing.assert_allclose(served['landmarks'][:, 0], snapped[:, 0],
                             atol=1e-3)
  np.testing.assert_allclose(served['landmarks'][:, 1],
                             clicks[:, 1] * wh[:, 0], atol=1e-3)
  np.testing.assert_allclose(served['landmarks'][[1, 3], 2],
                             clicks[[1, 3], 2] * wh[[1, 3], 0], atol=1e-3)
  np.testing.assert_allclose(served['landmarks'][[0, 2], 2],
                             snapped[[0, 2], 2], atol=1e-3)
  # The signature is serving_default on the refined clicks, and not on the
  # clicks as given. How far refining moves the embedding depends on what
  # the few training steps learned (5e-4 was seen), so the bar is only
  # well above float noise (the equality above holds to 1e-5).
  serving_default = tf.saved_model.load(path).signatures['serving_default']
  embed = lambda landmarks: serving_default(
      images=encoded, landmarks=tf.constant(landmarks),
      visibility=tf.constant(visibility))['embedding'].numpy()
  assert np.abs(embed(served['landmarks']) - served['embedding']).max() <= 1e-5
  assert np.abs(embed(clicks * wh) - served['embedding']).max() > 1e-5


def test_warmup_requests_run_on_the_export(exported):
  """TF Serving replays them at load; one that fails stops the model."""
  from tensorflow_serving.apis import prediction_log_pb2
  _, _, path = exported
  signature = tf.saved_model.load(path).signatures['serving_default']
  replayed = 0
  for record in tf.data.TFRecordDataset(
      os.path.join(path, 'assets.extra', 'tf_serving_warmup_requests')):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in
              log.predict_log.request.inputs.items()}
    out = signature(**inputs)['embedding'].numpy()
    assert np.all(np.isfinite(out)) and out.shape[0] == inputs['images'].shape[0]
    replayed += 1
  assert replayed == 2


@pytest.fixture(scope='module')
def manta_dataset(tmp_path_factory):
  """Tiny rays with five landmarks (data_tools/manta.py), 32 px."""
  from data_tools import convert
  from data_tools import make_synthetic
  out = tmp_path_factory.mktemp('manta')
  cfg = make_synthetic.DatasetConfig(
      out=str(out), variant='manta', identities=4, test_identities=3,
      train_images=4, gallery_images=2, query_images=3, workers=1,
      progress=False, synth=make_synthetic.synthetic.SynthConfig(size=32))
  convert.convert(convert.ConvertConfig(
      annotations=make_synthetic.generate(cfg),
      out=str(out / 'tfrecords'), split_column='split', strict=True,
      workers=1, progress=False, gallery_includes_train=True))
  return str(out / 'tfrecords')


@pytest.mark.slow
def test_thin_plate_spline_alignment_is_served(manta_dataset, tmp_path):
  """--alignment=tps: the exported serving_default bends each photo onto the
  template in-graph, as training's preprocessing does."""
  from conftest import tiny_train_config
  from lmid_tf import train
  cfg = tiny_train_config(manta_dataset, str(tmp_path / 'run'),
                          steps_per_epoch=1, align=True, alignment='tps',
                          schedule='a trains=all lr=1e-3 epochs=1')
  assert cfg.preprocess.alignment == 'tps'
  assert len(cfg.preprocess.template) == 5
  train.train(cfg)
  path = export.export(str(tmp_path / 'run' / 'embedding_model.keras'),
                       str(tmp_path / 'export'))
  loaded = tf.saved_model.load(path)
  signature = loaded.signatures['serving_default']
  specs = signature.structured_input_signature[1]
  assert specs['landmarks'].shape.as_list() == [None, 5, 2]
  assert specs['visibility'].shape.as_list() == [None, 5]
  meta = pipeline.records.read_metadata(manta_dataset)
  parsed = [pipeline.records.parse(r, 5) for r in tf.data.TFRecordDataset(
      meta.shard_paths(manta_dataset, 'query')).take(9)]
  encoded = tf.stack([p['encoded'] for p in parsed])
  pixels = tf.stack([p['landmarks'] for p in parsed]) * 32.0
  visible = tf.stack([p['visible'] for p in parsed])
  assert int(tf.reduce_max(tf.reduce_sum(visible, 1))) == 5
  served = signature(images=encoded, landmarks=pixels,
                     visibility=visible)['embedding'].numpy()
  embedder = keras.saving.load_model(str(tmp_path / 'run' /
                                         'embedding_model.keras'))
  expected = embedder(preprocess.encoded_inputs(encoded, pixels, visible,
                                                _pre(str(tmp_path / 'run'))),
                      training=False)['embedding'].numpy()
  assert np.abs(served - expected).max() <= 1e-5
  # The spline's solve is in the served graph.
  graph = signature.graph.as_graph_def()
  ops = {n.op for n in graph.node} | {
      n.op for f in graph.library.function for n in f.node_def}
  assert 'MatrixSolve' in ops

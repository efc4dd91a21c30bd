"""gRPC serving: client <-> dev server, bad requests, a concurrent burst,
and the real tensorflow_model_server when it is installed."""

import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from conftest import REPO
from lmid_tf.data import records
from serving import client as client_lib
from serving import dev_server
from serving import export


@pytest.fixture(scope='module')
def served(trained_run, tmp_path_factory, tiny_dataset):
  base = str(tmp_path_factory.mktemp('served'))
  path = export.export(os.path.join(trained_run, 'embedding_model.keras'),
                       base)
  server, port = dev_server.serve(base, 'lmid', port=0, workers=4)
  client = client_lib.EmbeddingClient(f'127.0.0.1:{port}', timeout=60)
  metadata = records.read_metadata(tiny_dataset)
  parsed = [records.parse(r, 3) for r in tf.data.TFRecordDataset(
      metadata.shard_paths(tiny_dataset, 'query')).take(5)]
  images = [p['encoded'].numpy() for p in parsed]
  sizes = [tf.shape(tf.io.decode_image(p['encoded']))[:2].numpy()
           for p in parsed]
  landmarks = np.stack([p['landmarks'].numpy() * s[::-1]
                        for p, s in zip(parsed, sizes)]).astype(np.float32)
  visible = np.stack([p['visible'].numpy() for p in parsed])
  signature = tf.saved_model.load(path).signatures['serving_default']
  expected = signature(images=tf.constant(images), landmarks=landmarks,
                       visibility=visible)['embedding'].numpy()
  yield dict(client=client, port=port, base=base, images=images,
             landmarks=landmarks, visible=visible, expected=expected)
  client.close()
  server.stop(0)


def test_round_trip_equals_the_saved_model(served):
  client = served['client']
  got = client.embed(served['images'], served['landmarks'], served['visible'],
                     batch_size=2)
  np.testing.assert_allclose(got, served['expected'], atol=1e-5)
  inputs = client.signature_inputs()
  assert inputs == {'images': ('string', [-1]),
                    'landmarks': ('float32', [-1, 3, 2]),
                    'visibility': ('float32', [-1, 3])}


def _request(served, signature='serving_default', model='lmid', **overrides):
  request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
      name=model, signature_name=signature))
  inputs = {'images': np.array(served['images'][:2], dtype=object),
            'landmarks': served['landmarks'][:2],
            'visibility': served['visible'][:2]}
  inputs.update(overrides)
  for name, value in inputs.items():
    if value is not None:
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


BAD_REQUESTS = {
    'wrong dtype': (dict(landmarks=np.zeros((2, 3, 2), np.float64)),
                    grpc.StatusCode.INVALID_ARGUMENT, 'dtype float64, expected float32'),
    'wrong landmark count': (dict(landmarks=np.zeros((2, 4, 2), np.float32)),
                             grpc.StatusCode.INVALID_ARGUMENT, 'shape [2, 4, 2]'),
    'wrong rank': (dict(visibility=np.zeros((2,), np.float32)),
                   grpc.StatusCode.INVALID_ARGUMENT, "'visibility': shape"),
    'undecodable bytes': (dict(images=None),  # replaced in the test
                          grpc.StatusCode.INVALID_ARGUMENT,
                          'images[1]: not a JPEG/PNG/GIF/BMP'),
    'missing input': (dict(visibility=None), grpc.StatusCode.INVALID_ARGUMENT,
                      "missing ['visibility']"),
    'batch mismatch': (dict(visibility=np.ones((3, 3), np.float32)),
                       grpc.StatusCode.INVALID_ARGUMENT, 'batch size'),
    'nan landmark': (dict(landmarks=np.full((2, 3, 2), np.nan, np.float32)),
                     grpc.StatusCode.INVALID_ARGUMENT, 'NaN'),
}


@pytest.mark.parametrize('case', sorted(BAD_REQUESTS))
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    served, case):
  overrides, code, text = BAD_REQUESTS[case]
  if case == 'undecodable bytes':   # a good image, then garbage
    overrides = dict(images=np.array([served['images'][0], b'junk'],
                                     dtype=object))
  with pytest.raises(grpc.RpcError) as error:
    served['client'].stub.Predict(_request(served, **overrides), timeout=60)
  assert error.value.code() == code
  assert text in error.value.details()
  assert 'node' not in error.value.details(), 'no graph internals'
  np.testing.assert_allclose(
      served['client'].embed(served['images'][:1], served['landmarks'][:1],
                             served['visible'][:1]),
      served['expected'][:1], atol=1e-5)


def test_unknown_signature_and_model(served):
  stub = served['client'].stub
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(_request(served, signature='nope'), timeout=60)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert 'nope' in error.value.details()
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(_request(served, model='other'), timeout=60)
  assert error.value.code() == grpc.StatusCode.NOT_FOUND
  wrong = client_lib.EmbeddingClient(served['client'].server, 'other')
  with pytest.raises(client_lib.ClientError, match='NOT_FOUND'):
    wrong.signature_inputs()
  wrong.close()


def test_concurrent_burst_of_200_mixed_requests(served):
  client = served['client']
  bad = {'images': np.array([b'junk'], dtype=object),
         'landmarks': served['landmarks'][:1],
         'visibility': served['visible'][:1]}

  def one(i):
    if i % 4 == 3:
      try:
        client.predict(bad)
      except client_lib.ClientError as e:
        return 'bad', 'INVALID_ARGUMENT' in str(e)
      return 'bad', False
    j = i % len(served['images'])
    out = client.predict({'images': np.array([served['images'][j]],
                                             dtype=object),
                          'landmarks': served['landmarks'][j:j + 1],
                          'visibility': served['visible'][j:j + 1]})
    return 'good', bool(np.allclose(out['embedding'][0],
                                    served['expected'][j], atol=1e-5))

  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
    futures = [pool.submit(one, i) for i in range(200)]
    results = [f.result(timeout=300) for f in futures]
  assert time.monotonic() - start < 300
  assert sum(kind == 'bad' for kind, _ in results) == 50
  assert all(ok for _, ok in results)


@pytest.mark.slow
def test_client_cli(served, tmp_path):
  image = tmp_path / 'photo.png'
  image.write_bytes(served['images'][0])
  points = ';'.join(f'{x},{y}' if v else ''
                    for (x, y), v in zip(served['landmarks'][0],
                                         served['visible'][0]))
  server = f'--server=127.0.0.1:{served["port"]}'
  result = subprocess.run(
      [sys.executable, '-m', 'serving.client', server, f'--image={image}',
       f'--landmarks={points}', '--json'], cwd=REPO, capture_output=True,
      text=True)
  assert result.returncode == 0, result.stderr
  printed = json.loads(result.stdout)
  assert printed['photo'] == str(image)
  np.testing.assert_allclose(printed['embedding'], served['expected'][0],
                             atol=1e-4)
  bad = subprocess.run(
      [sys.executable, '-m', 'serving.client', server, f'--image={image}',
       '--landmarks=1,2;3,4'], cwd=REPO, capture_output=True, text=True)
  assert bad.returncode == 1
  assert '2 landmarks, the model takes 3' in bad.stderr


def test_inline_landmark_parsing():
  points, visible = client_lib.parse_inline_landmarks('1,2;;5.5,6', 3)
  np.testing.assert_array_equal(points, [[1, 2], [0, 0], [5.5, 6]])
  np.testing.assert_array_equal(visible, [1, 0, 1])
  with pytest.raises(ValueError, match="landmark 1 is 'x'"):
    client_lib.parse_inline_landmarks('1,2;x;3,4', 3)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('tensorflow_model_server') is None,
                    reason='tensorflow_model_server is not on PATH')
def test_real_tensorflow_model_server(served):
  port = _free_port()
  process = subprocess.Popen(
      ['tensorflow_model_server', f'--port={port}', '--model_name=lmid',
       f'--model_base_path={os.path.abspath(served["base"])}'],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    client = client_lib.EmbeddingClient(f'127.0.0.1:{port}', timeout=30)
    deadline = time.monotonic() + 120
    while True:
      try:
        client.signature_inputs()
        break
      except client_lib.ClientError:
        if time.monotonic() > deadline or process.poll() is not None:
          raise
        time.sleep(1)
    got = client.embed(served['images'], served['landmarks'],
                       served['visible'])
    np.testing.assert_allclose(got, served['expected'], atol=1e-5)
    # The check is in the graph: TF Serving gives the dev server's message.
    with pytest.raises(client_lib.ClientError,
                       match=r'INVALID_ARGUMENT.*images\[0\]: not a JPEG'):
      client.predict({'images': np.array([b'junk'], dtype=object),
                      'landmarks': served['landmarks'][:1],
                      'visibility': served['visible'][:1]})
    client.close()
  finally:
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_client_without_landmarks_uses_images_only(
    trained_run, trained_landmark_model, tmp_path, served):
  base = str(tmp_path / 'with_predictor')
  path = export.export(os.path.join(trained_run, 'embedding_model.keras'),
                       base, landmark_model_path=trained_landmark_model)
  server, port = dev_server.serve(base, 'lmid', port=0, workers=2)
  try:
    image = tmp_path / 'photo.png'
    image.write_bytes(served['images'][0])
    result = subprocess.run(
        [sys.executable, '-m', 'serving.client', f'--server=127.0.0.1:{port}',
         f'--image={image}', '--json'], cwd=REPO, capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = tf.saved_model.load(path).signatures['images_only'](
        images=tf.constant([served['images'][0]]))
    np.testing.assert_allclose(printed['embedding'],
                               expected['embedding'][0], atol=1e-4)
    np.testing.assert_allclose(printed['confidence'],
                               expected['confidence'][0], atol=1e-3)
    assert np.array(printed['landmarks']).shape == (3, 2)
  finally:
    server.stop(0)
  # What the predictor adds to a request, in process and through gRPC.
  for mode in ('--nogrpc', '--grpc'):
    timed = subprocess.run(
        [sys.executable, '-m', 'benchmarks.landmark_latency',
         f'--model={base}', '--requests=3', mode], cwd=REPO,
        capture_output=True, text=True)
    assert timed.returncode == 0, timed.stderr
    assert 'added by the predictor' in timed.stdout
    assert ('gRPC, dev_server' in timed.stdout) == (mode == '--grpc')
  # The export without a predictor: a clear message instead.
  image = tmp_path / 'photo.png'
  plain = subprocess.run(
      [sys.executable, '-m', 'serving.client',
       f'--server=127.0.0.1:{served["port"]}', f'--image={image}'],
      cwd=REPO, capture_output=True, text=True)
  assert plain.returncode == 1 and '--landmark_model' in plain.stderr


@pytest.mark.slow
def test_soak_with_malformed_requests_and_a_hot_swap(served, tmp_path):
  from benchmarks import serving_soak
  base = str(tmp_path / 'export')
  shutil.copytree(os.path.join(served['base'], '1'), os.path.join(base, '1'))
  server, port = dev_server.serve(
      base, port=0, workers=4, poll_seconds=0.2,
      max_batch_size=serving_soak.MAX_BATCH, max_message_mb=1)
  try:
    made = serving_soak.requests_by_kind(base)
    address = f'127.0.0.1:{port}'
    # Load runs on while the new version appears, loads and is swapped in.
    results = serving_soak.run_load(
        address, made, seconds=3, concurrency=8, malformed=0.15,
        events=[(1, lambda: serving_soak.new_version(base))])
    deadline = time.time() + 90
    while server.servables['lmid'].version != 2 and time.time() < deadline:
      results += serving_soak.run_load(address, made, seconds=2,
                                       concurrency=8, malformed=0.15, seed=1)
    after = serving_soak.run_load(address, made, seconds=2, concurrency=8,
                                  malformed=0.15, seed=2)
    summary = serving_soak.summarize(results + after)
    assert summary['good_failed'] == 0, summary
    for kind in serving_soak.KINDS[1:]:
      assert set(summary['by_kind'].get(kind, {})) <= {'INVALID_ARGUMENT'}
    assert sum(len(summary['by_kind'].get(k, {})) for k in
               serving_soak.KINDS[1:]) >= 3       # most kinds were sent
    # Served by version 1, then only by version 2 once it was loaded.
    assert set(summary['versions']) == {1, 2}, summary
    assert {r[4] for r in after if r[1] == 'good'} == {2}
    assert server.servables['lmid'].version == 2

    # Above the message limit: gRPC's own RESOURCE_EXHAUSTED, and the
    # server keeps serving.
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f'127.0.0.1:{port}'))
    huge = predict_pb2.PredictRequest()
    huge.CopyFrom(made['good'])
    huge.inputs['images'].CopyFrom(tf.make_tensor_proto([b'x' * (2 << 20)]))
    with pytest.raises(grpc.RpcError) as raised:
      stub.Predict(huge, timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Predict(made['good'], timeout=30).model_spec.version.value == 2
  finally:
    server.stop(0)


def test_a_broken_new_version_is_skipped(served, tmp_path):
  base = str(tmp_path / 'export')
  shutil.copytree(os.path.join(served['base'], '1'), os.path.join(base, '1'))
  server, _ = dev_server.serve(base, port=0, poll_seconds=0)
  try:
    os.makedirs(os.path.join(base, '2'))
    with open(os.path.join(base, '2', 'saved_model.pb'), 'wb') as f:
      f.write(b'not a SavedModel')
    watcher = dev_server.VersionWatcher(server.servables, 'lmid', base, 1)
    assert not watcher.poll() and watcher.failed == {2}
    assert server.servables['lmid'].version == 1
  finally:
    server.stop(0)


@pytest.mark.slow
def test_serving_benchmark_times_each_export_precision(tmp_path):
  """benchmarks.serving, tiny: gRPC and both in-process signatures, for a
  float32 and a bfloat16 export."""
  out = tmp_path / 'serving.json'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.serving', '--backbone=small_cnn',
       '--size=32', '--requests=3', '--batch=4', '--batches=1',
       f'--json={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(out.read_text())
  rows = {r['path']: r for r in report['rows']
          if r['path'].startswith('lmid-tf ')}
  assert len(rows) == 6, rows
  for name in ('float32 gRPC dev_server', 'bfloat16 serving_default',
               'bfloat16 preprocessed'):
    assert any(path.startswith(f'lmid-tf {name}') for path in rows), name
  for row in rows.values():
    assert row['p50_ms'] > 0 and row['images_per_second'] > 0
  assert report['command'].startswith('python -m benchmarks.serving ')
  assert 'CPU flags' in result.stdout

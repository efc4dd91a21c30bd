r"""Serving latency and throughput: gRPC (dev_server) and in-process, per
export precision, beside PyTorch inference of the same network.

  python -m benchmarks.serving --backbone=resnet50 --size=128 \
      --precisions=float32,bfloat16

Exports a Landmark-Id embedding model (an untrained one of the given
backbone, or --run_dir's trained model) once per --precisions
(serving.export --precision), serves it with serving.dev_server on
127.0.0.1, and measures single-image latency (p50/p99) and batched
throughput through serving/client.py, then in-process through the
SavedModel's serving_default (encoded images + landmarks, preprocessing in
the graph) and preprocessed (model inputs) signatures. With torch installed
(benchmarks/requirements-peer.txt) and no --run_dir, PyTorch's inference of
the same network (benchmarks/peer_pytorch.py's twin, channels-last; fp32
and bf16 autocast) is timed on the same shapes. Bounded: --requests single
calls and --batches batched calls per row.
"""

import os
import sys
import tempfile
import time
import warnings

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import machine
from lmid_tf import artifacts
from lmid_tf import config
from lmid_tf.modeling import model as model_lib
from lmid_tf.data import preprocess
from serving import client as client_lib
from serving import dev_server
from serving import export
from serving import warmup


CHANNELS = 3   # photos in colour, as peer_pytorch times them


def _untrained_model(folder, backbone, size):
  cfg = config.resolve(config.Settings(backbone=backbone, image_size=size,
                                       init='none'),
                       num_classes=10, channels=CHANNELS, num_landmarks=3,
                       require_phases=False)
  net = model_lib.build_model(cfg.model)
  path = os.path.join(folder, artifacts.EMBEDDING_MODEL)
  model_lib.embedding_model(net).save(path)
  artifacts.write_preprocess(folder, cfg.preprocess)
  return path


def _percentiles(seconds):
  ms = np.array(seconds) * 1000
  return np.percentile(ms, 50), np.percentile(ms, 99)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('run_dir', '', 'Trained run to serve; default: an '
                      'untrained model of --backbone.')
  flags.DEFINE_string('backbone', 'resnet50', 'Backbone of the untrained model.')
  flags.DEFINE_integer('size', 128, 'Input side of the untrained model.')
  flags.DEFINE_string('json', '', 'Also write the rows to this JSON file '
                      '(for scripts and tests; the table is for people).')
  flags.DEFINE_integer('requests', 50, 'Single-image requests timed.')
  flags.DEFINE_integer('batch', 32, 'Images per batched request.')
  flags.DEFINE_integer('batches', 5, 'Batched requests timed.')
  flags.DEFINE_list('precisions', ['float32', 'bfloat16'],
                    'Export precisions to serve (serving.export --precision).')
  flags.DEFINE_bool('peer', True, 'Also time PyTorch inference of the same '
                    'network when torch is installed (untrained models only).')


def _time(call, batch, requests, batches):
  """(p50 ms, p99 ms) of single calls, images/s of batched calls."""
  call(1), call(batch)  # warm-up: tracing, allocation
  single = []
  for _ in range(requests):
    start = time.perf_counter()
    call(1)
    single.append(time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(batches):
    call(batch)
  return (*_percentiles(single),
          batch * batches / (time.perf_counter() - start))


def export_rows(model_path, folder, serving_precision):
  """Rows (path, p50, p99, img/s) for one export precision."""
  base = os.path.join(folder, f'export_{serving_precision}')
  path = export.export(model_path, base, serving_precision=serving_precision)
  pre = artifacts.model_preprocess(path)
  request = warmup.example_request(pre, FLAGS.batch)
  images = list(tf.make_ndarray(request.inputs['images']))
  landmarks = tf.make_ndarray(request.inputs['landmarks'])
  visible = tf.make_ndarray(request.inputs['visibility'])
  server, port = dev_server.serve(base, port=0)
  client = client_lib.EmbeddingClient(f'127.0.0.1:{port}', timeout=120)
  loaded = tf.saved_model.load(path)
  serve = loaded.signatures[export.SERVING_SIGNATURE]
  preprocessed = loaded.signatures[export.PREPROCESSED_SIGNATURE]
  wanted = preprocessed.structured_input_signature[1]
  inputs = {name: value for name, value in preprocess.encoded_inputs(
      tf.constant(images), landmarks, visible, pre).items() if name in wanted}

  def grpc_call(n):
    client.embed(images[:n], landmarks[:n], visible[:n], batch_size=n)

  def serving_default_call(n):
    serve(images=tf.constant(images[:n]), landmarks=landmarks[:n],
          visibility=visible[:n])['embedding'].numpy()

  def preprocessed_call(n):
    preprocessed(**{name: value[:n] for name, value in inputs.items()}
                 )['embedding'].numpy()

  rows = []
  try:
    for name, call in (('gRPC dev_server', grpc_call),
                       ('serving_default', serving_default_call),
                       ('preprocessed', preprocessed_call)):
      rows.append((f'lmid-tf {serving_precision} {name}',
                   *_time(call, FLAGS.batch, FLAGS.requests, FLAGS.batches)))
      print(f'{rows[-1][0]}: p50 {rows[-1][1]:.1f} ms, {rows[-1][3]:.1f} '
            'img/s batched', flush=True)
  finally:
    client.close()
    server.stop(0)
  return rows


def peer_rows():
  """PyTorch inference of the same network, fp32 and bf16 autocast."""
  from benchmarks import peer_pytorch  # needs torch
  if FLAGS.backbone not in peer_pytorch.TWINS:
    print(f'(no PyTorch twin of {FLAGS.backbone}: no PyTorch rows)')
    return []
  rows = []
  for bf16 in (False, True):
    single = peer_pytorch.time_torch(FLAGS.backbone, FLAGS.size, 1, CHANNELS,
                                     3, FLAGS.requests, bf16=bf16, train=False)
    batched = peer_pytorch.time_torch(
        FLAGS.backbone, FLAGS.size, FLAGS.batch, CHANNELS, 3, FLAGS.batches,
        bf16=bf16, train=False)
    # time_torch gives images/s: a single image's mean latency, no p99.
    rows.append((f'PyTorch {"bf16 autocast" if bf16 else "fp32"} (model '
                 'inputs; mean, not p50)', 1000 / single, None, batched))
  return rows


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  print('command: python -m benchmarks.serving ' + ' '.join(sys.argv[1:]))
  print(machine.describe())
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    model_path = (os.path.join(FLAGS.run_dir, artifacts.EMBEDDING_MODEL)
                  if FLAGS.run_dir else
                  _untrained_model(folder, FLAGS.backbone, FLAGS.size))
    for serving_precision in FLAGS.precisions:
      rows += export_rows(model_path, folder, serving_precision)
  if FLAGS.peer and not FLAGS.run_dir:
    try:
      rows += peer_rows()
    except ImportError:
      print('(torch not installed: no PyTorch rows; '
            'pip install -r benchmarks/requirements-peer.txt)')
  what = FLAGS.run_dir or f'{FLAGS.backbone} {FLAGS.size}px, untrained'
  print(f'\nmodel: {what}; batch {FLAGS.batch}')
  print(f'| path | single image p50 ms | p99 ms | img/s, batches of '
        f'{FLAGS.batch} |')
  print('| --- | ---: | ---: | ---: |')
  for name, p50, p99, rate in rows:
    p99 = '' if p99 is None else f'{p99:.1f}'
    print(f'| {name} | {p50:.1f} | {p99} | {rate:.1f} |')
  if FLAGS.json:
    artifacts.write_json(FLAGS.json, {
        'command': 'python -m benchmarks.serving ' + ' '.join(sys.argv[1:]),
        'cpu_flags': machine.cpu_flags(),
        'rows': [{'path': name, 'p50_ms': p50, 'p99_ms': p99,
                  'images_per_second': rate} for name, p50, p99, rate in rows]})


if __name__ == '__main__':
  define_flags()
  app.run(main)

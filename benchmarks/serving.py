r"""Serving latency and throughput: gRPC (dev_server) and in-process.

  python -m benchmarks.serving --backbone=resnet50 --size=128

Exports a Landmark-Id embedding model (an untrained one of the given
backbone, or --run_dir's trained model), serves it with serving.dev_server on
127.0.0.1, and measures single-image latency (p50/p99) and batched
throughput through serving/client.py, then the same through the
SavedModel signature in-process. Bounded: --requests single calls and
--batches batched calls.
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

from lmid_tf import artifacts
from lmid_tf import config
from lmid_tf import model as model_lib
from serving import client as client_lib
from serving import dev_server
from serving import export
from serving import warmup


def _untrained_model(folder, backbone, size):
  cfg = config.resolve(config.Settings(backbone=backbone, image_size=size,
                                       init='none'),
                       num_classes=10, channels=1, num_landmarks=3,
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
  flags.DEFINE_integer('requests', 50, 'Single-image requests timed.')
  flags.DEFINE_integer('batch', 32, 'Images per batched request.')
  flags.DEFINE_integer('batches', 5, 'Batched requests timed.')


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  print('command: python -m benchmarks.serving ' + ' '.join(sys.argv[1:]))
  with tempfile.TemporaryDirectory() as folder:
    model_path = (os.path.join(FLAGS.run_dir, artifacts.EMBEDDING_MODEL)
                  if FLAGS.run_dir else
                  _untrained_model(folder, FLAGS.backbone, FLAGS.size))
    path = export.export(model_path, os.path.join(folder, 'export'))
    pre = artifacts.model_preprocess(path)
    request = warmup.example_request(pre, FLAGS.batch)
    images = list(tf.make_ndarray(request.inputs['images']))
    landmarks = tf.make_ndarray(request.inputs['landmarks'])
    visible = tf.make_ndarray(request.inputs['visibility'])
    server, port = dev_server.serve(os.path.join(folder, 'export'), port=0)
    client = client_lib.EmbeddingClient(f'127.0.0.1:{port}', timeout=120)
    signature = tf.saved_model.load(path).signatures['serving_default']

    def grpc_call(n):
      client.embed(images[:n], landmarks[:n], visible[:n], batch_size=n)

    def local_call(n):
      signature(images=tf.constant(images[:n]), landmarks=landmarks[:n],
                visibility=visible[:n])['embedding'].numpy()

    rows = []
    for name, call in (('gRPC dev_server', grpc_call),
                       ('in-process', local_call)):
      call(1), call(FLAGS.batch)  # warm-up: tracing, allocation
      single = []
      for _ in range(FLAGS.requests):
        start = time.perf_counter()
        call(1)
        single.append(time.perf_counter() - start)
      start = time.perf_counter()
      for _ in range(FLAGS.batches):
        call(FLAGS.batch)
      throughput = FLAGS.batch * FLAGS.batches / (time.perf_counter() - start)
      rows.append((name, *_percentiles(single), throughput))
    client.close()
    server.stop(0)
  what = FLAGS.run_dir or f'{FLAGS.backbone} {FLAGS.size}px'
  print(f'model: {what}; batch {FLAGS.batch}')
  print(f'{"path":18} {"p50 ms":>8} {"p99 ms":>8} {"img/s batched":>14}')
  for name, p50, p99, rate in rows:
    print(f'{name:18} {p50:8.1f} {p99:8.1f} {rate:14.1f}')


if __name__ == '__main__':
  define_flags()
  app.run(main)

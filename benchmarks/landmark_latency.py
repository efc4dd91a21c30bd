r"""What the landmark predictor adds to a single-photo serving request.

  python -m benchmarks.landmark_latency --model=runs/x/export

Times, in process, the export's `serving_default` (photo + clicked
landmarks) against `images_only` (photo alone; the predictor finds them), one
photo per call, after warm-up; prints p50/p99 and the predictor's share.

With --grpc the same two requests go through serving.dev_server and
serving.client, as a client sees them. The dev server is Python: its
per-request overhead is larger than TF Serving's, so the share it prints is
a lower bound of what TF Serving would show, and the in-process share an
upper bound.
"""

import os
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import machine
from lmid_tf import artifacts
from lmid_tf import cli
from serving import client as client_lib
from serving import dev_server
from serving import warmup

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, 'Export base or version with the '
                      'images_only signature (serving.export '
                      '--landmark_model).')
  flags.DEFINE_integer('requests', 100, 'Timed calls per signature.')
  flags.DEFINE_bool('grpc', False, 'Through serving.dev_server and '
                    'serving.client instead of in process.')


def _time_interleaved(calls: list, count: int) -> list:
  """[(function, inputs)] -> [(p50 ms, p99 ms)] of each, the calls taken
  in turn (A B B A A B ...), so that a drift of the machine's speed (another
  process, CPU frequency) weighs on both alike."""
  for function, inputs in calls:
    for _ in range(5):
      function(**inputs)
  seconds = [[] for _ in calls]
  for i in range(count):
    order = range(len(calls)) if i % 2 == 0 else reversed(range(len(calls)))
    for j in order:
      function, inputs = calls[j]
      start = time.perf_counter()
      function(**inputs)
      seconds[j].append(time.perf_counter() - start)
  return [(np.percentile(s, 50) * 1e3, np.percentile(s, 99) * 1e3)
          for s in seconds]


def main(argv):
  del argv
  if not FLAGS.model:
    raise app.UsageError('--model is required')
  print('command: python -m benchmarks.landmark_latency '
        + ' '.join(sys.argv[1:]))
  print(machine.describe())
  _, path = artifacts.resolve_model(FLAGS.model)
  loaded = tf.saved_model.load(path)
  if 'images_only' not in loaded.signatures:
    raise ValueError(f'{path}: no images_only signature; export with '
                     '--landmark_model')
  pre = artifacts.model_preprocess(path)
  request = warmup.example_request(pre, 1)
  clicked = {name: tf.constant(tf.make_ndarray(request.inputs[name]))
             for name in ('images', 'landmarks', 'visibility')}
  calls = [(loaded.signatures['serving_default'], clicked),
           (loaded.signatures['images_only'], {'images': clicked['images']})]
  server = None
  if FLAGS.grpc:
    server, port = dev_server.serve(os.path.dirname(path), port=0,
                                    poll_seconds=0)
    client = client_lib.EmbeddingClient(f'127.0.0.1:{port}')
    as_numpy = {k: v.numpy() for k, v in clicked.items()}
    calls = [(lambda **x: client.predict(x, 'serving_default'), as_numpy),
             (lambda **x: client.predict(x, 'images_only'),
              {'images': as_numpy['images']})]
  try:
    timings = _time_interleaved(calls, FLAGS.requests)
  finally:
    if server:
      client.close()
      server.stop(None)
  rows = list(zip(('serving_default (clicked landmarks)',
                   'images_only (predicted landmarks)'), timings))
  where = 'gRPC, dev_server' if FLAGS.grpc else 'in process'
  print(f'{"signature, 1 photo, " + where:40} {"p50 ms":>8} {"p99 ms":>8}')
  for name, (p50, p99) in rows:
    print(f'{name:40} {p50:8.2f} {p99:8.2f}')
  added = rows[1][1][0] / rows[0][1][0] - 1
  print(f'added by the predictor: {100 * added:.1f}% of the p50 latency')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'landmark_latency')

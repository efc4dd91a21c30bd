r"""Serving soak: sustained concurrent load, malformed requests, a hot swap.

  python -m benchmarks.serving_soak --model_base=runs/demo/export \
      --seconds=60 --concurrency=32

Copies the newest version under --model_base into a scratch export base,
starts serving.dev_server on it in a subprocess (so its memory can be
read), and sends --concurrency streams of requests for --seconds: about
--malformed of them malformed (wrong dtype, wrong shape, garbage image
bytes, a batch above the server's limit), the rest good single-image
requests. At --swap_at seconds a new version is exported into the base
(copied under a temporary name, then renamed, as serving.export does); the
server must switch to it with no failed request. Prints the outcome per
request kind, latency percentiles of the good ones, the versions that
served them, and the server's RSS at the 10th second and at the end.
"""

import collections
import concurrent.futures
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks import machine
from lmid_tf import artifacts
from lmid_tf import files
from serving import warmup

MAX_BATCH = 8        # the server's --max_batch_size in the soak
KINDS = ('good', 'wrong_dtype', 'wrong_shape', 'garbage_bytes',
         'oversize_batch')


def requests_by_kind(model_base: str) -> dict:
  """One request of each kind, built from the model's own warm-up request
  (so they fit any export: its image size, channels and landmarks)."""
  version = artifacts.latest_version(model_base)
  good = next(r for r in warmup.read(version)
              if len(tf.make_ndarray(r.inputs['images'])) == 1)
  made = {'good': good}
  bad = predict_pb2.PredictRequest()
  bad.CopyFrom(good)
  bad.inputs['images'].CopyFrom(tf.make_tensor_proto(
      np.zeros([1], np.float32)))
  made['wrong_dtype'] = bad
  bad = predict_pb2.PredictRequest()
  bad.CopyFrom(good)
  if 'landmarks' in good.inputs:
    bad.inputs['landmarks'].CopyFrom(tf.make_tensor_proto(
        np.zeros([1, 7, 2], np.float32)))
  else:
    bad.inputs['images'].CopyFrom(tf.make_tensor_proto([[b'x']]))
  made['wrong_shape'] = bad
  bad = predict_pb2.PredictRequest()
  bad.CopyFrom(good)
  bad.inputs['images'].CopyFrom(tf.make_tensor_proto([b'\x00garbage' * 40]))
  made['garbage_bytes'] = bad
  bad = predict_pb2.PredictRequest()
  bad.CopyFrom(good)
  for name, proto in good.inputs.items():
    array = tf.make_ndarray(proto)
    bad.inputs[name].CopyFrom(tf.make_tensor_proto(
        np.repeat(array, MAX_BATCH + 1, axis=0)))
  made['oversize_batch'] = bad
  return made


def new_version(model_base: str) -> int:
  """Publishes a copy of the newest version as the next one, the way an
  export does: whole, under a temporary name, then renamed."""
  number = artifacts.next_version(model_base)
  with files.replacing(os.path.join(model_base, str(number))) as tmp:
    shutil.copytree(artifacts.latest_version(model_base), tmp)
  return number


def run_load(address: str, made: dict, seconds: float, concurrency: int,
             malformed: float, seed: int = 0, events=()) -> list:
  """Sends requests from `concurrency` threads for `seconds`.

  `events`: (at_second, callable) run once from the driver thread.
  Returns [(start, kind, status code name, latency s, serving version)].
  """
  channel = grpc.insecure_channel(address, options=[
      ('grpc.max_send_message_length', 256 << 20)])
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  bad_kinds = [k for k in KINDS if k != 'good']
  results, lock = [], threading.Lock()
  start = time.time()
  stop = start + seconds

  def stream(index):
    rng = random.Random(seed * 1000 + index)
    while time.time() < stop:
      kind = rng.choice(bad_kinds) if rng.random() < malformed else 'good'
      began = time.time()
      try:
        response = stub.Predict(made[kind], timeout=30)
        code, version = 'OK', response.model_spec.version.value
      except grpc.RpcError as e:
        code, version = e.code().name, 0
      with lock:
        results.append((began - start, kind, code, time.time() - began,
                        version))

  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    streams = [pool.submit(stream, i) for i in range(concurrency)]
    pending = sorted(events, key=lambda e: e[0])
    while pending or not all(s.done() for s in streams):
      if pending and time.time() - start >= pending[0][0]:
        pending.pop(0)[1]()
      time.sleep(0.05)
    for s in streams:
      s.result()
  channel.close()
  return results


def summarize(results: list) -> dict:
  """Per kind: {status: count}; plus latency and versions of the good."""
  by_kind = collections.defaultdict(collections.Counter)
  for _, kind, code, _, _ in results:
    by_kind[kind][code] += 1
  good = [r for r in results if r[1] == 'good' and r[2] == 'OK']
  ms = np.array([r[3] for r in good]) * 1000
  return {
      'by_kind': {k: dict(v) for k, v in by_kind.items()},
      'good_failed': sum(n for code, n in by_kind['good'].items()
                         if code != 'OK'),
      'p50_ms': float(np.percentile(ms, 50)) if len(ms) else float('nan'),
      'p99_ms': float(np.percentile(ms, 99)) if len(ms) else float('nan'),
      'versions': dict(collections.Counter(r[4] for r in good)),
  }


def _rss_mb(pid: int) -> float:
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model_base', None, 'Export base (numbered versions).')
  flags.DEFINE_float('seconds', 60, 'Length of the soak.')
  flags.DEFINE_integer('concurrency', 32, 'Concurrent request streams.')
  flags.DEFINE_float('malformed', 0.1, 'Share of malformed requests.')
  flags.DEFINE_float('swap_at', 30, 'Second at which a new version appears '
                     '(negative: none).')
  flags.DEFINE_integer('workers', 4, 'Server worker threads.')


def main(argv):
  del argv
  print('command: python -m benchmarks.serving_soak ' + ' '.join(sys.argv[1:]))
  print(machine.describe())
  scratch = tempfile.mkdtemp(prefix='lmid_soak_')
  base = os.path.join(scratch, 'export')
  os.makedirs(base)
  shutil.copytree(artifacts.latest_version(FLAGS.model_base),
                  os.path.join(base, '1'))
  made = requests_by_kind(base)
  port = 18500 + os.getpid() % 1000
  server = subprocess.Popen(
      [sys.executable, '-m', 'serving.dev_server', f'--model_base={base}',
       f'--port={port}', f'--workers={FLAGS.workers}', '--poll_seconds=1',
       f'--max_batch_size={MAX_BATCH}'], stdout=subprocess.PIPE, text=True)
  try:
    assert 'serving' in server.stdout.readline()
    rss = {}
    events = [(t, lambda t=t: rss.__setitem__(t, _rss_mb(server.pid)))
              for t in (10, FLAGS.seconds - 0.5)]
    swapped = {}
    if FLAGS.swap_at >= 0:
      events.append((FLAGS.swap_at, lambda: swapped.setdefault(
          'version', new_version(base))))
    results = run_load(f'127.0.0.1:{port}', made, FLAGS.seconds,
                       FLAGS.concurrency, FLAGS.malformed, events=events)
  finally:
    server.terminate()
    server.wait(30)
    shutil.rmtree(scratch, ignore_errors=True)
  summary = summarize(results)
  print(f'\n{len(results)} requests in {FLAGS.seconds:g} s at concurrency '
        f'{FLAGS.concurrency} ({len(results) / FLAGS.seconds:.1f} req/s)')
  print(f'{"kind":16}{"count":>8}  statuses')
  for kind in KINDS:
    counts = summary['by_kind'].get(kind, {})
    print(f'{kind:16}{sum(counts.values()):8d}  {counts}')
  first, last = rss.get(10, float('nan')), rss.get(FLAGS.seconds - 0.5,
                                                   float('nan'))
  print(f'good requests failed: {summary["good_failed"]}; latency p50 '
        f'{summary["p50_ms"]:.1f} ms, p99 {summary["p99_ms"]:.1f} ms')
  print(f'versions that served good requests: {summary["versions"]} (new '
        f'version {swapped.get("version", "-")} at {FLAGS.swap_at:g} s)')
  print(f'server RSS: {first:.0f} MB at 10 s, {last:.0f} MB at the end '
        f'({100 * (last - first) / first:+.1f} %)')


if __name__ == '__main__':
  define_flags()
  flags.mark_flag_as_required('model_base')
  app.run(main)

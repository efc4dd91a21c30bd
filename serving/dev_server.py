r"""A small in-process TF Serving PredictionService, for development and tests.

  python -m serving.dev_server --model_base=runs/demo/export --port=8500

Speaks the same gRPC protos as `tensorflow_model_server` (Predict and
GetModelMetadata) and loads the same SavedModel (newest version under
--model_base), so serving/client.py works against either. It is not a
replacement for TF Serving: no batching scheduler, no version policies, no
REST. Binds 127.0.0.1 by default with a bounded worker pool.

Like TF Serving, it polls --model_base (every --poll_seconds) and serves a
newer version once it is complete: it is loaded and warmed up beside the
one serving, then swapped in; requests already running finish on the
version they started with, and every response names its version. A version
that fails to load is reported and skipped; the old one keeps serving.

Bad requests get INVALID_ARGUMENT (wrong dtype/shape, missing or unknown
inputs, undecodable images, unknown signature, a batch above
--max_batch_size), RESOURCE_EXHAUSTED (a message above --max_message_mb,
from gRPC itself) or NOT_FOUND (unknown model or version), with a message;
the server keeps serving.
"""

import concurrent.futures
import os
import signal
import sys
import threading

from absl import app
from absl import flags
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf.speed import single_photo
from serving import warmup

_DEFAULT_SIGNATURE = 'serving_default'


class Servable:
  """One loaded SavedModel version (the newest under `base` by default)."""

  def __init__(self, name: str, base: str, version: int = 0):
    path = (os.path.join(base, str(version)) if version else
            artifacts.latest_version(base))
    self.name, self.version = name, int(os.path.basename(path))
    self.loaded = tf.saved_model.load(path)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
      proto.ParseFromString(f.read())
    self.signature_defs = {
        k: v for k, v in proto.meta_graphs[0].signature_def.items()
        if not k.startswith('__')}
    # One-photo requests go through a frozen copy (lmid_tf/speed/
    # single_photo.py): the same graph, without per-call weight casts and
    # filter reorders.
    self.functions = {
        k: single_photo.SmallBatchFunction(self.loaded.signatures[k])
        for k in self.signature_defs}
    # Traced and allocated before the first real request, as TF Serving
    # replays the same file.
    for index, request in enumerate(warmup.read(path)):
      signature = request.model_spec.signature_name or _DEFAULT_SIGNATURE
      if signature not in self.functions:
        continue
      try:
        self.functions[signature](**{
            k: tf.constant(tf.make_ndarray(v))
            for k, v in request.inputs.items()})
      except tf.errors.OpError as e:
        raise ValueError(
            f'{path}: warm-up request {index} ({signature}) fails: '
            f'{cli.error_message(e).splitlines()[-1]}; this version cannot '
            'serve (re-export it with serving.export)') from None


class VersionWatcher:
  """Serves the newest complete version under an export base, swapping it
  in only once it is loaded (exports are renamed into place whole, and
  `artifacts.versions` lists only folders that hold a saved_model.pb)."""

  def __init__(self, servables: dict, name: str, base: str,
               poll_seconds: float):
    self.servables, self.name, self.base = servables, name, base
    self.poll_seconds = poll_seconds
    self.failed = set()
    self.stop = threading.Event()
    self.thread = threading.Thread(target=self._run, daemon=True)

  def poll(self) -> bool:
    """Loads and swaps in a newer version if there is one; True if it did."""
    found = [v for v in artifacts.versions(self.base) if v not in self.failed]
    current = self.servables[self.name].version
    if not found or found[-1] <= current:
      return False
    try:
      servable = Servable(self.name, self.base, found[-1])
    except Exception as e:  # pylint: disable=broad-except
      # A broken export must not take the server down: keep serving.
      self.failed.add(found[-1])
      print(f'dev_server: version {found[-1]} failed to load, still serving '
            f'{current}: {cli.error_message(e)}', file=sys.stderr, flush=True)
      return False
    self.servables[self.name] = servable     # one atomic reference swap
    print(f'dev_server: now serving version {servable.version} (was '
          f'{current})', flush=True)
    return True

  def _run(self):
    while not self.stop.wait(self.poll_seconds):
      self.poll()


def _check_inputs(request, signature_def):
  """Returns {name: np.ndarray} or raises ValueError with the reason."""
  expected = signature_def.inputs
  missing = sorted(set(expected) - set(request.inputs))
  unknown = sorted(set(request.inputs) - set(expected))
  if missing or unknown:
    raise ValueError(f'inputs must be {sorted(expected)}; missing {missing}, '
                     f'unknown {unknown}')
  arrays, batch = {}, None
  for name, info in expected.items():
    proto = request.inputs[name]
    if proto.dtype != info.dtype:
      raise ValueError(
          f'input {name!r}: dtype {tf.dtypes.as_dtype(proto.dtype).name}, '
          f'expected {tf.dtypes.as_dtype(info.dtype).name}')
    try:
      array = tf.make_ndarray(proto)
    except (ValueError, TypeError) as e:
      raise ValueError(f'input {name!r}: malformed tensor: {e}') from None
    dims = [d.size for d in info.tensor_shape.dim]
    if array.ndim != len(dims) or any(
        want not in (-1, got) for want, got in zip(dims, array.shape)):
      shown = ', '.join('?' if d == -1 else str(d) for d in dims)
      raise ValueError(f'input {name!r}: shape {list(array.shape)}, '
                       f'expected [{shown}]')
    if batch is not None and array.shape[0] != batch:
      raise ValueError(f'input {name!r}: batch size {array.shape[0]} differs '
                       f'from the other inputs\' {batch}')
    batch = array.shape[0]
    if array.dtype.kind == 'f' and not np.all(np.isfinite(array)):
      raise ValueError(f'input {name!r}: contains NaN or infinity')
    arrays[name] = array
  return arrays


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, servables: dict, max_batch_size: int = 0):
    self.servables = servables
    self.max_batch_size = max_batch_size

  def _servable(self, model_spec, context) -> Servable:
    servable = self.servables.get(model_spec.name)
    if servable is None:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f'Servable not found for request: Latest({model_spec.name})')
    if model_spec.HasField('version') and (
        model_spec.version.value != servable.version):
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f'Servable not found for request: Specific('
                    f'{model_spec.name}, {model_spec.version.value})')
    return servable

  def _spec(self, servable, signature):
    return model_pb2.ModelSpec(
        name=servable.name, signature_name=signature,
        version={'value': servable.version})

  def Predict(self, request, context):
    servable = self._servable(request.model_spec, context)
    signature = request.model_spec.signature_name or _DEFAULT_SIGNATURE
    if signature not in servable.functions:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f'Serving signature key "{signature}" not found; have '
                    f'{sorted(servable.functions)}')
    try:
      arrays = _check_inputs(request, servable.signature_defs[signature])
    except ValueError as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    batch = len(next(iter(arrays.values()))) if arrays else 0
    if self.max_batch_size and batch > self.max_batch_size:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f'batch of {batch} images is above the server\'s '
                    f'--max_batch_size={self.max_batch_size}; split it')
    try:
      outputs = servable.functions[signature](
          **{k: tf.constant(v) for k, v in arrays.items()})
    except tf.errors.InvalidArgumentError as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, cli.error_message(e))
    except tf.errors.OpError as e:
      context.abort(grpc.StatusCode.INTERNAL, cli.error_message(e))
    wanted = set(request.output_filter) or set(outputs)
    response = predict_pb2.PredictResponse(
        model_spec=self._spec(servable, signature))
    for name in wanted:
      if name not in outputs:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f'output_filter names unknown output {name!r}')
      response.outputs[name].CopyFrom(tf.make_tensor_proto(
          outputs[name].numpy()))
    return response

  def GetModelMetadata(self, request, context):
    servable = self._servable(request.model_spec, context)
    if list(request.metadata_field) != ['signature_def']:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    'metadata_field must be ["signature_def"]')
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
      signature_map.signature_def[key].CopyFrom(value)
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=self._spec(servable, ''))
    response.metadata['signature_def'].Pack(signature_map)
    return response


class Server:
  """A running dev server: `.port`, `.servables`, `.watcher`, `.stop()`."""

  def __init__(self, grpc_server, port, servables, watcher):
    self.grpc_server, self.port = grpc_server, port
    self.servables, self.watcher = servables, watcher

  def stop(self, grace=None):
    if self.watcher:
      self.watcher.stop.set()
    return self.grpc_server.stop(grace)


def serve(model_base: str, model_name: str = 'lmid', host: str = '127.0.0.1',
          port: int = 8500, workers: int = 4, poll_seconds: float = 1.0,
          max_batch_size: int = 64, max_message_mb: int = 64) -> tuple:
  """Starts the server; returns (Server, bound port).

  port=0 picks a free port; poll_seconds=0 serves one version only. Call
  `.stop(grace)` to stop it.
  """
  servables = {model_name: Servable(model_name, model_base)}
  server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers=workers),
      options=[('grpc.max_receive_message_length', max_message_mb << 20)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(servables, max_batch_size), server)
  bound = server.add_insecure_port(f'{host}:{port}')
  if not bound:
    raise OSError(f'cannot bind {host}:{port}')
  server.start()
  watcher = None
  if poll_seconds > 0:
    watcher = VersionWatcher(servables, model_name, model_base, poll_seconds)
    watcher.thread.start()
  return Server(server, bound, servables, watcher), bound


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model_base', None, 'Export base with numbered '
                      'SavedModel versions (the newest is served).')
  flags.DEFINE_string('model_name', 'lmid', 'Model name clients ask for.')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to bind.')
  flags.DEFINE_integer('port', 8500, 'gRPC port (TF Serving uses 8500).')
  flags.DEFINE_integer('workers', 4, 'Request worker threads.')
  flags.DEFINE_float('poll_seconds', 1.0, 'How often to look for a newer '
                     'version under --model_base (0: never; TF Serving\'s '
                     '--file_system_poll_wait_seconds).')
  flags.DEFINE_integer('max_batch_size', 64, 'Largest batch of images one '
                       'request may carry (0: no limit).')
  flags.DEFINE_integer('max_message_mb', 64, 'Largest request message, MiB.')


def main(argv):
  del argv
  if not FLAGS.model_base:
    raise app.UsageError('--model_base is required')
  server, port = serve(FLAGS.model_base, FLAGS.model_name, FLAGS.host,
                       FLAGS.port, FLAGS.workers, FLAGS.poll_seconds,
                       FLAGS.max_batch_size, FLAGS.max_message_mb)
  print(f'dev_server: serving {FLAGS.model_name} version '
        f'{server.servables[FLAGS.model_name].version} from '
        f'{FLAGS.model_base} on {FLAGS.host}:{port}', flush=True)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  try:
    stop.wait()
  except KeyboardInterrupt:
    pass
  server.stop(grace=2).wait()


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'dev_server')

r"""gRPC client for Landmark-Id embeddings from TF Serving (or dev_server).

  python -m serving.client --server=localhost:8500 --image=manta.jpg \
      --landmarks="120,80;200,82;;150,300;160,410"
  python -m serving.client --server=localhost:8500 --image=a.jpg \
      --landmarks=annotations.csv --gallery=runs/demo/catalogue.npz

--landmarks is either one inline string per --image ("x,y" per landmark in
model order, separated by ";", empty for not visible) or a CSV with a path
column and <landmark>_x/_y columns (no identity needed), matched to the
photos by path. With --gallery (a catalogue from `lmid_tf.identify index`)
it prints a verdict and the best matches instead of the embedding; --json
prints one JSON object per photo, for scripts.
"""

import json

from absl import app
from absl import flags
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from lmid_tf.data import annotations
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf import cli
from lmid_tf.modeling import landmark_model


class ClientError(RuntimeError):
  """A request failed; the message names the server and the gRPC status."""


class EmbeddingClient:
  """Embeds photos through PredictionService.Predict."""

  def __init__(self, server: str, model_name: str = 'lmid',
               timeout: float = 30.0):
    self.server, self.model_name, self.timeout = server, model_name, timeout
    self.channel = grpc.insecure_channel(
        server, options=[('grpc.max_receive_message_length', 64 << 20)])
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

  def close(self):
    self.channel.close()

  def _call(self, method, request):
    try:
      return method(request, timeout=self.timeout)
    except grpc.RpcError as e:
      raise ClientError(f'{self.server}: {e.code().name}: {e.details()}') from e

  def signature_inputs(self, signature: str = 'serving_default') -> dict:
    """{input name: (dtype name, shape with -1 for any)} from the server."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=self.model_name),
        metadata_field=['signature_def'])
    response = self._call(self.stub.GetModelMetadata, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signatures)
    if signature not in signatures.signature_def:
      raise ClientError(f'{self.server}: model {self.model_name} has no '
                        f'signature {signature!r}')
    return {name: (tf.dtypes.as_dtype(info.dtype).name,
                   [d.size for d in info.tensor_shape.dim])
            for name, info in signatures.signature_def[signature].inputs.items()}

  def predict(self, inputs: dict, signature: str = 'serving_default') -> dict:
    """One Predict call: {name: array} -> {output name: np.ndarray}."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
        name=self.model_name, signature_name=signature))
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = self._call(self.stub.Predict, request)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

  def embed(self, images: list, landmarks=None, visibility=None,
            batch_size: int = 32) -> np.ndarray:
    """Embeds encoded photos, `batch_size` per request.

    Args:
      images: list of PNG/JPEG bytes.
      landmarks: [N, K, 2] pixel (x, y); visibility: [N, K] 0/1. None for the
        baseline model.
    Returns:
      [N, D] float32 L2-normalised embeddings.
    """
    parts = []
    for start in range(0, len(images), batch_size):
      stop = start + batch_size
      inputs = {'images': np.array(images[start:stop], dtype=object)}
      if landmarks is not None:
        inputs['landmarks'] = np.asarray(landmarks[start:stop], np.float32)
        inputs['visibility'] = np.asarray(visibility[start:stop], np.float32)
      parts.append(self.predict(inputs)['embedding'])
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

  def embed_images_only(self, images: list, batch_size: int = 32) -> dict:
    """Photos without landmarks, through the images_only signature (the
    export's landmark predictor finds them).

    Returns {'embedding' [N, D], 'landmarks' [N, K, 2] pixels,
    'confidence' [N, K]}.
    """
    parts = []
    for start in range(0, len(images), batch_size):
      parts.append(self.predict(
          {'images': np.array(images[start:start + batch_size],
                              dtype=object)}, signature='images_only'))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def parse_inline_landmarks(text: str, num_landmarks: int) -> tuple:
  """'x,y;x,y;;x,y' -> ([K, 2] pixels, [K] visibility)."""
  fields = text.split(';')
  if len(fields) != num_landmarks:
    raise ValueError(f'--landmarks {text!r}: {len(fields)} landmarks, the '
                     f'model takes {num_landmarks}')
  points, visible = np.zeros((num_landmarks, 2), np.float32), np.zeros(
      num_landmarks, np.float32)
  for k, field in enumerate(fields):
    if not field.strip():
      continue
    try:
      x, y = (float(v) for v in field.split(','))
    except ValueError:
      raise ValueError(f'--landmarks {text!r}: landmark {k} is {field!r}, '
                       'expected "x,y"') from None
    if not (np.isfinite(x) and np.isfinite(y)):
      raise ValueError(f'--landmarks {text!r}: landmark {k} is not finite')
    points[k], visible[k] = (x, y), 1.0
  return points, visible


def read_landmarks(spec: list, image_paths: list, num_landmarks: int):
  """--landmarks values -> ([N, K, 2], [N, K])."""
  if len(spec) == 1 and spec[0].lower().endswith('.csv'):
    rows = annotations.rows_for_images(spec[0], image_paths)
    return annotations.landmark_arrays(rows, num_landmarks)
  if len(spec) != len(image_paths):
    raise ValueError(f'{len(image_paths)} --image but {len(spec)} '
                     '--landmarks (one inline string per image, or one CSV)')
  parsed = [parse_inline_landmarks(s, num_landmarks) for s in spec]
  return (np.stack([p for p, _ in parsed]), np.stack([v for _, v in parsed]))


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('server', 'localhost:8500', 'host:port of TF Serving '
                      'or serving.dev_server.')
  flags.DEFINE_string('model_name', 'lmid', 'Served model name.')
  flags.DEFINE_multi_string('image', [], 'Photo(s) to embed.')
  flags.DEFINE_multi_string('landmarks', [], 'Inline "x,y;x,y;;..." per '
                            'image, or one CSV (path + landmark columns).')
  flags.DEFINE_string('gallery', '', 'Catalogue (.npz from lmid_tf.identify '
                      'index): print matches instead of embeddings.')
  flags.DEFINE_integer('top_k', 5, 'Matches to print with --gallery.')
  flags.DEFINE_float('timeout', 30.0, 'Deadline per request, seconds.')
  flags.DEFINE_integer('batch_size', 32, 'Images per request.')
  flags.DEFINE_bool('json', False, 'Print one JSON object per photo: '
                    '{"photo", "embedding"}, or with --gallery the verdict '
                    'and matches.')


def main(argv):
  del argv
  if not FLAGS.image:
    raise app.UsageError('at least one --image is required')
  client = EmbeddingClient(FLAGS.server, FLAGS.model_name, FLAGS.timeout)
  try:
    inputs = client.signature_inputs()
    images = []
    for path in FLAGS.image:
      with open(path, 'rb') as f:
        images.append(f.read())
    found = None
    if 'landmarks' in inputs and not FLAGS.landmarks:
      # No clicked landmarks: the export's predictor finds them.
      try:
        client.signature_inputs('images_only')
      except ClientError:
        raise ValueError('this model takes landmarks: pass --landmarks, or '
                         'serve an export made with --landmark_model (it '
                         'has the images_only signature)') from None
      found = client.embed_images_only(images, FLAGS.batch_size)
      embeddings = found['embedding']
    else:
      landmarks = visibility = None
      if 'landmarks' in inputs:
        num_landmarks = inputs['landmarks'][1][1]
        landmarks, visibility = read_landmarks(FLAGS.landmarks, FLAGS.image,
                                               num_landmarks)
      embeddings = client.embed(images, landmarks, visibility,
                                FLAGS.batch_size)
  finally:
    client.close()
  for i, (path, embedding) in enumerate(zip(FLAGS.image, embeddings)):
    confidence = None if found is None else found['confidence'][i]
    if FLAGS.gallery:
      catalogue = catalogue_lib.load(FLAGS.gallery)
      if confidence is not None and not (
          confidence > landmark_model.VISIBLE).any():
        record = catalogue_lib.not_found_record(path, confidence,
                                                catalogue.threshold)
      else:
        record = catalogue_lib.match_record(path, catalogue_lib.rank_identities(
            embedding, catalogue, FLAGS.top_k), catalogue)
    else:
      record = {'photo': path,
                'embedding': [round(float(v), 6) for v in embedding]}
    if found is not None:
      record['landmarks'] = [[round(float(v), 1) for v in point]
                             for point in found['landmarks'][i]]
      record['confidence'] = [round(float(c), 3) for c in confidence]
    if FLAGS.json:
      print(json.dumps(record))
    elif FLAGS.gallery:
      print(catalogue_lib.format_record(record))
    else:
      print(f'{path}: {record["embedding"]}')
    if found is not None and not FLAGS.json:
      print(f'  landmarks found (pixels): {record["landmarks"]}, '
            f'confidence {record["confidence"]}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'client', errors=(ClientError,))

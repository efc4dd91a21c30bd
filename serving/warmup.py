"""TF Serving warm-up requests, shipped inside the SavedModel.

TF Serving replays `assets.extra/tf_serving_warmup_requests` at load time,
so the first real request does not pay for graph tracing and allocation.
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')


def example_request(pre, batch: int = 1, model_name: str = 'lmid'):
  """A valid serving_default request: gray PNGs, landmarks in the middle."""
  side = pre.image_size
  image = np.full((side, side, pre.channels), 128, np.uint8)
  encoded = tf.io.encode_png(image).numpy()
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name,
                                     signature_name='serving_default'))
  request.inputs['images'].CopyFrom(tf.make_tensor_proto([encoded] * batch))
  if pre.num_landmarks:
    # Spread on a circle: landmarks that all coincide fix no frame.
    angles = 2 * np.pi * np.arange(pre.num_landmarks) / pre.num_landmarks
    ring = side / 2 + side / 4 * np.stack([np.cos(angles), np.sin(angles)], 1)
    landmarks = np.tile(ring[None].astype(np.float32), [batch, 1, 1])
    request.inputs['landmarks'].CopyFrom(tf.make_tensor_proto(landmarks))
    request.inputs['visibility'].CopyFrom(tf.make_tensor_proto(
        np.ones((batch, pre.num_landmarks), np.float32)))
  return request


def read(saved_model_dir: str) -> list:
  """The warm-up PredictRequests a SavedModel ships ([] if none)."""
  path = os.path.join(saved_model_dir, WARMUP_FILE)
  if not os.path.exists(path):
    return []
  requests = []
  for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(serialized)
    requests.append(log.predict_log.request)
  return requests


def write(saved_model_dir: str, pre, batch_sizes=(1, 8)) -> str:
  path = os.path.join(saved_model_dir, WARMUP_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for batch in batch_sizes:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(
              request=example_request(pre, batch)))
      writer.write(log.SerializeToString())
  return path

"""The one preprocessing path: decode -> resize -> normalise -> heatmaps.

Training, evaluation and the exported serving graph all call these two
functions, so a served model cannot drift from the trained one:

  decode(encoded)                       per example, before batching
  model_inputs(images, landmarks, ...)  per batch, after any augmentation
"""

import dataclasses
import json

import tensorflow as tf

from lmid_tf import heatmaps

# Per-channel statistics of [0, 1] images (ImageNet's for colour, their mean
# for grayscale), so pretrained layers see inputs on their usual scale.
_MEAN = {1: (0.449,), 3: (0.485, 0.456, 0.406)}
_STD = {1: (0.226,), 3: (0.229, 0.224, 0.225)}


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  image_size: int = 128
  channels: int = 1               # 1 grayscale, 3 colour
  num_landmarks: int = 3          # 0: the baseline, no heatmap input
  radius: float = 0.05            # heatmap blob radius, fraction of size
  falloff: float = 0.0            # linear ramp beyond the blob (0: paper)
  reconstruction_size: int = 64   # reconstruction target side

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'PreprocessConfig':
    return cls(**json.loads(text))


def decode(encoded: tf.Tensor, cfg: PreprocessConfig) -> tuple:
  """Decodes and resizes one encoded image.

  Resizing stretches to a square; normalised landmark coordinates are
  unchanged by it.

  Args:
    encoded: [] string, PNG or JPEG bytes.

  Returns:
    image: [S, S, C] float32 in [0, 1]; size: [2] float32 (height, width) of
    the encoded image, to normalise pixel landmark coordinates.
  """
  image = tf.io.decode_image(encoded, channels=cfg.channels,
                             expand_animations=False)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  image = tf.image.resize(tf.cast(image, tf.float32) / 255.0,
                          [cfg.image_size, cfg.image_size], antialias=True)
  image = tf.clip_by_value(image, 0.0, 1.0)
  image.set_shape([cfg.image_size, cfg.image_size, cfg.channels])
  return image, size


def normalise(images: tf.Tensor, channels: int) -> tf.Tensor:
  mean = tf.constant(_MEAN[channels], tf.float32)
  std = tf.constant(_STD[channels], tf.float32)
  return (images - mean) / std


def denormalise(images: tf.Tensor, channels: int) -> tf.Tensor:
  """Inverse of normalise, for pictures of model inputs."""
  mean = tf.constant(_MEAN[channels], tf.float32)
  std = tf.constant(_STD[channels], tf.float32)
  return tf.clip_by_value(images * std + mean, 0.0, 1.0)


def model_inputs(images, landmarks, visible, cfg: PreprocessConfig,
                 with_target: bool = False) -> dict:
  """Batch of [0, 1] images (+ landmarks) -> the model's named inputs.

  Args:
    images: [B, S, S, C] float32 in [0, 1].
    landmarks: [B, K, 2] normalised (x, y); visible: [B, K]. Ignored when
      cfg.num_landmarks == 0.
    with_target: also return the reconstruction target.

  Returns:
    {'image': [B, S, S, C] normalised,
     'heatmaps': [B, S, S, K] in [0, 1] (Landmark-Id only),
     'target_heatmaps': [B, R, R, K] (only with_target)}
  """
  inputs = {'image': normalise(images, cfg.channels)}
  if cfg.num_landmarks:
    inputs['heatmaps'] = heatmaps.render(landmarks, visible, cfg.image_size,
                                         cfg.image_size, cfg.radius,
                                         cfg.falloff)
    if with_target:
      inputs['target_heatmaps'] = heatmaps.render(
          landmarks, visible, cfg.reconstruction_size,
          cfg.reconstruction_size, cfg.radius, cfg.falloff)
  return inputs


def encoded_inputs(encoded, landmarks_px, visible, cfg: PreprocessConfig) -> dict:
  """Encoded photos + pixel landmarks -> the model's named inputs.

  The path of the serving signature and of identification on user photos.

  Args:
    encoded: [B] string, PNG/JPEG bytes of any size.
    landmarks_px: [B, K, 2] float (x, y) in pixels of each photo; visible:
      [B, K]. Both ignored (may be None) when cfg.num_landmarks == 0.
  """
  images, sizes = tf.map_fn(
      lambda e: decode(e, cfg), encoded,
      fn_output_signature=(
          tf.TensorSpec([cfg.image_size, cfg.image_size, cfg.channels],
                        tf.float32),
          tf.TensorSpec([2], tf.float32)))
  if cfg.num_landmarks:
    # x by width, y by height of each photo; sizes are (height, width).
    landmarks = landmarks_px / tf.reverse(sizes, axis=[1])[:, None, :]
  else:
    landmarks = tf.zeros([tf.shape(encoded)[0], 0, 2])
    visible = tf.zeros([tf.shape(encoded)[0], 0])
  return model_inputs(images, landmarks, visible, cfg)

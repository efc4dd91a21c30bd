"""The one preprocessing path: decode -> resize -> normalise -> heatmaps.

Training, evaluation and the exported serving graph all call these two
functions, so a served model cannot drift from the trained one:

  decode(encoded)                       per example, before batching
  model_inputs(images, landmarks, ...)  per batch, after any augmentation
"""

import dataclasses
import json

import tensorflow as tf

from lmid_tf.data import alignment
from lmid_tf.data import heatmaps

# Per-channel statistics of [0, 1] images (ImageNet's for colour, their mean
# for grayscale), so pretrained layers see inputs on their usual scale.
_MEAN = {1: (0.449,), 3: (0.485, 0.456, 0.406)}
_STD = {1: (0.226,), 3: (0.229, 0.224, 0.225)}


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Built by config.build; saved with every model (artifacts.py)."""
  image_size: int
  channels: int                   # 1 grayscale, 3 colour
  num_landmarks: int              # 0: the baseline, no heatmap input
  radius: float                   # heatmap blob radius, fraction of size
  falloff: float                  # linear ramp beyond the blob (0: paper)
  reconstruction_size: int        # reconstruction target side
  # ((x, y), ...) normalised, one per landmark: align every image onto it
  # (alignment.py); () for no alignment.
  template: tuple
  heatmap_channels: bool          # False: landmarks only align the image
  alignment: str                  # alignment.KINDS (with a template)
  landmark_names: tuple           # the data's, to check models combine

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'PreprocessConfig':
    raw = json.loads(text)
    raw['template'] = tuple(tuple(p) for p in raw['template'])
    raw['landmark_names'] = tuple(raw['landmark_names'])
    return cls(**raw)


_JPEG_RATIOS = (1, 2, 4, 8)


def _decode_pixels(encoded: tf.Tensor, channels: int, image_size: int):
  """([H', W', C] uint8, [2] float32 (height, width) of the encoded image).

  A JPEG is decoded at 1/2, 1/4 or 1/8 (libjpeg's DCT scaling, a filtered
  downscale done inside the decoder) when its shorter side is still at
  least `image_size` after it: a 3000 px camera photo then costs a small
  part of a full decode, for the same `image_size` result up to
  resampling differences. Other formats are decoded whole.
  """
  def jpeg():
    shape = tf.image.extract_jpeg_shape(encoded)
    shortest = tf.reduce_min(shape[:2])
    branch = tf.reduce_sum(tf.cast(
        shortest >= image_size * tf.constant(_JPEG_RATIOS[1:]), tf.int32))
    image = tf.switch_case(branch, [
        (lambda r=r: tf.io.decode_jpeg(encoded, channels=channels, ratio=r))
        for r in _JPEG_RATIOS])
    return image, tf.cast(shape[:2], tf.float32)

  def other():
    image = tf.io.decode_image(encoded, channels=channels,
                               expand_animations=False)
    return image, tf.cast(tf.shape(image)[:2], tf.float32)

  is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), b'\xff\xd8\xff')
  image, size = tf.cond(is_jpeg, jpeg, other)
  image.set_shape([None, None, channels])
  return image, size


def decode(encoded: tf.Tensor, cfg: PreprocessConfig) -> tuple:
  """Decodes and resizes one encoded image.

  Resizing stretches to a square; normalised landmark coordinates are
  unchanged by it.

  Args:
    encoded: [] string, PNG or JPEG (or GIF, BMP) bytes.

  Returns:
    image: [S, S, C] float32 in [0, 1]; size: [2] float32 (height, width) of
    the encoded image, to normalise pixel landmark coordinates.
  """
  image, size = _decode_pixels(encoded, cfg.channels, cfg.image_size)
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
    With a template, image and heatmaps are in the aligned frame.
  """
  if cfg.template and cfg.num_landmarks:
    images, landmarks, visible = alignment.align(images, landmarks, visible,
                                                 cfg.template, cfg.alignment)
  inputs = {'image': normalise(images, cfg.channels)}
  if cfg.num_landmarks and cfg.heatmap_channels:
    inputs['heatmaps'] = heatmaps.render(landmarks, visible, cfg.image_size,
                                         cfg.image_size, cfg.radius,
                                         cfg.falloff)
    if with_target:
      inputs['target_heatmaps'] = heatmaps.render(
          landmarks, visible, cfg.reconstruction_size,
          cfg.reconstruction_size, cfg.radius, cfg.falloff)
  return inputs


def check_encoded(encoded: tf.Tensor) -> tf.Tensor:
  """Asserts, in the graph, that every item of [B] `encoded` is an image.

  A request with garbage bytes then fails with INVALID_ARGUMENT naming the
  item ("images[3]: not a JPEG/PNG/GIF/BMP") from any server that runs the
  graph -- TF Serving as well as serving.dev_server -- instead of a decoder
  error deep in a loop.

  Returns:
    The assertion op, to run before decoding (a control dependency).
  """
  head = tf.strings.substr(encoded, 0, 4)
  known = (tf.equal(tf.strings.substr(head, 0, 3), b'\xff\xd8\xff')
           | tf.equal(head, b'\x89PNG')
           | tf.equal(tf.strings.substr(head, 0, 3), b'GIF')
           | tf.equal(tf.strings.substr(head, 0, 2), b'BM'))
  first_bad = tf.argmin(tf.cast(known, tf.int32))
  return tf.debugging.Assert(
      tf.reduce_all(known),
      [tf.strings.format('images[{}]: not a JPEG/PNG/GIF/BMP', first_bad)])


def decode_batch(encoded: tf.Tensor, cfg: PreprocessConfig) -> tuple:
  """[B] encoded photos of any size -> ([B, S, S, C] in [0, 1], [B, 2] sizes
  (height, width) of the photos), after check_encoded."""
  with tf.control_dependencies([check_encoded(encoded)]):
    encoded = tf.identity(encoded)
  return tf.map_fn(
      lambda e: decode(e, cfg), encoded,
      fn_output_signature=(
          tf.TensorSpec([cfg.image_size, cfg.image_size, cfg.channels],
                        tf.float32),
          tf.TensorSpec([2], tf.float32)))


def normalise_landmarks(landmarks_px: tf.Tensor, sizes: tf.Tensor) -> tf.Tensor:
  """[B, K, 2] pixel (x, y) of photos of [B, 2] (height, width) -> [B, K, 2]
  normalised coordinates (records.py), which resizing leaves unchanged."""
  return (tf.cast(landmarks_px, tf.float32)
          / tf.reverse(sizes, axis=[1])[:, None, :])


def encoded_inputs(encoded, landmarks_px, visible, cfg: PreprocessConfig) -> dict:
  """Encoded photos + pixel landmarks -> the model's named inputs.

  The path of the serving signature and of identification on user photos.

  Args:
    encoded: [B] string, JPEG/PNG/GIF/BMP bytes of any size.
    landmarks_px: [B, K, 2] float (x, y) in pixels of each photo; visible:
      [B, K]. Both ignored (may be None) when cfg.num_landmarks == 0.
  """
  images, sizes = decode_batch(encoded, cfg)
  if cfg.num_landmarks:
    landmarks = normalise_landmarks(landmarks_px, sizes)
  else:
    landmarks = tf.zeros([tf.shape(encoded)[0], 0, 2])
    visible = tf.zeros([tf.shape(encoded)[0], 0])
  return model_inputs(images, landmarks, visible, cfg)

"""The one embedding loop: batches in, concatenated numpy arrays out.

Evaluation embeds eval batches of records, identification embeds encoded
photos, the landmark trainer collects predictions; each says what one batch
gives (`per_batch`), and `collect` runs it and joins the parts.
"""

import numpy as np
import tensorflow as tf

from lmid_tf.data import preprocess
from lmid_tf.modeling import landmark_model


def collect(batches, per_batch) -> dict:
  """{key: np.concatenate of per_batch(batch)[key] over the batches}."""
  parts = {}
  for batch in batches:
    for key, value in per_batch(batch).items():
      parts.setdefault(key, []).append(np.asarray(value))
  return {k: np.concatenate(v) for k, v in parts.items()}


def mirrored_inputs(batch: dict, pre: preprocess.PreprocessConfig,
                    flip_pairs) -> dict:
  """Model inputs of the horizontally mirrored images of an eval batch.

  Mirroring swaps left and right, so each declared (left, right) landmark
  pair swaps channels; without that the heatmaps would lie.
  """
  images = batch['raw_image'][:, :, ::-1]
  landmarks = tf.stack([1.0 - batch['landmarks'][..., 0],
                        batch['landmarks'][..., 1]], axis=-1)
  order = list(range(landmarks.shape[1]))
  for left, right in flip_pairs:
    order[left], order[right] = right, left
  # As a typed tensor: an empty list (K = 0) would otherwise become float.
  order = tf.constant(order, tf.int32)
  visible = tf.gather(batch['visible'], order, axis=1)
  landmarks = tf.gather(landmarks, order, axis=1) * visible[..., None]
  return preprocess.model_inputs(images, landmarks, visible, pre)


def predict_batch(batch: dict, predictor) -> dict:
  """What a predictor ((model, PreprocessConfig), landmark_model.load) sees
  in an eval batch: landmark_model.predict_images's dict."""
  net, predictor_pre = predictor
  side = predictor_pre.image_size
  images = tf.image.resize(batch['raw_image'], [side, side], antialias=True)
  return landmark_model.predict_images(net, images, predictor_pre.channels)


def batch_landmarks(batch: dict, predictor, refine_radius=None) -> tuple:
  """(landmarks [B, K, 2], visible [B, K]) an eval batch is embedded with,
  given a predictor: the predicted ones, or with `refine_radius` the
  batch's own (annotated, perhaps perturbed) landmarks refined by the
  predictions (landmark_model.refined_landmarks)."""
  prediction = predict_batch(batch, predictor)
  if refine_radius is None:
    return landmark_model.found_landmarks(prediction)
  return (landmark_model.refined_landmarks(
      batch['landmarks'], batch['visible'], prediction, refine_radius),
          batch['visible'])


def embed_split(embed_fn, dataset: tf.data.Dataset,
                pre: preprocess.PreprocessConfig = None,
                flip_pairs=None, predictor=None, refine_radius=None) -> dict:
  """Runs `embed_fn` over an eval dataset.

  With `flip_pairs` (a list of (left, right) landmark indices, possibly
  empty for landmark-free models), each embedding is the normalised sum of
  the image's and its mirror image's (test-time flipping). With a
  `predictor`, predicted landmarks replace the annotated ones, or with
  `refine_radius` refine them (batch_landmarks); those are what
  'landmarks' / 'visible' return.

  Returns numpy arrays: embeddings [N, D], labels [N], names [N], paths
  [N] and viewpoints [N] (bytes), images [N, S, S, C] uint8, landmarks [N, K, 2],
  visible [N, K].
  """
  def per_batch(batch):
    if predictor is not None:
      batch = dict(batch)
      batch['landmarks'], batch['visible'] = batch_landmarks(
          batch, predictor, refine_radius)
      batch.update(preprocess.model_inputs(batch['raw_image'],
                                           batch['landmarks'],
                                           batch['visible'], pre))
    inputs = {k: batch[k] for k in ('image', 'heatmaps') if k in batch}
    embeddings = np.asarray(embed_fn(inputs))
    if flip_pairs is not None:
      embeddings = embeddings + np.asarray(embed_fn(
          mirrored_inputs(batch, pre, flip_pairs)))
      embeddings /= np.maximum(
          np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return {'embeddings': embeddings, 'labels': batch['label'],
            'names': batch['name'], 'paths': batch['path'],
            'viewpoints': batch['viewpoint'],
            'images': np.round(batch['raw_image'].numpy() * 255).astype(
                np.uint8),
            'landmarks': batch['landmarks'], 'visible': batch['visible']}
  return collect(dataset, per_batch)


def embed_photos(embed_fn, pre: preprocess.PreprocessConfig, photos: list,
                 landmarks_px=None, visible=None, batch_size: int = 32,
                 predictor=None) -> dict:
  """Encoded photos (+ pixel landmarks) -> embeddings and what was seen.

  The same preprocessing as the serving signature. Without landmarks, a
  `predictor` ((keras model, its PreprocessConfig), landmark_model.load)
  finds them, as the images_only signature does.

  Returns:
    {'embeddings' [N, D], 'images' [N, S, S, C] uint8 as the model saw them,
     'landmarks' [N, K, 2] normalised, 'visible' [N, K], 'confidence' [N, K]
     (1 for given landmarks)}
  """
  def per_batch(start):
    stop = start + batch_size
    encoded = tf.constant(photos[start:stop])
    decoded, sizes = preprocess.decode_batch(encoded, pre)
    count = len(photos[start:stop])
    landmarks = tf.zeros([count, pre.num_landmarks, 2])
    vis = confidence = tf.zeros([count, pre.num_landmarks])
    if pre.num_landmarks and landmarks_px is not None:
      landmarks = preprocess.normalise_landmarks(
          landmarks_px[start:stop], sizes)
      vis = confidence = tf.constant(visible[start:stop], tf.float32)
    elif pre.num_landmarks:
      net, predictor_pre = predictor
      found = landmark_model.predict_encoded(net, predictor_pre, encoded)
      confidence = found['visibility']
      landmarks, vis = landmark_model.found_landmarks(found)
    return {'embeddings': embed_fn(preprocess.model_inputs(
        decoded, landmarks, vis, pre)),
            'images': np.round(decoded.numpy() * 255).astype(np.uint8),
            'landmarks': landmarks, 'visible': vis, 'confidence': confidence}
  return collect(range(0, len(photos), batch_size), per_batch)

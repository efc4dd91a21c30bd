r"""Exports a trained embedding model as a SavedModel for TF Serving.

  python -m serving.export --run_dir=runs/demo --export_base=runs/demo/export

Writes `<export_base>/<version>/` (TF Serving's layout; the version is one
more than the newest present, so old versions are never overwritten), via a
temporary folder renamed into place. Signatures:

  serving_default (Landmark-Id)
    images     string  [B]        encoded JPEG/PNG, any size
    landmarks  float32 [B, K, 2]  (x, y) in pixels of that image
    visibility float32 [B, K]     1 visible, 0 not (its coordinates ignored)
    -> embedding float32 [B, D]   L2-normalised
  serving_default (baseline): images only.

  preprocessed
    image     float32 [B, S, S, C]  normalised as lmid_tf.data.preprocess does
    heatmaps  float32 [B, S, S, K]  (Landmark-Id only)
    -> embedding float32 [B, D]

  images_only (with --landmark_model)
    images     string  [B]
    -> embedding [B, D]; landmarks float32 [B, K, 2] pixels of each photo
       (0 where not found); confidence float32 [B, K] (found above 0.5)

  refined_landmarks (with --landmark_model)
    images, landmarks, visibility  as serving_default (the clicks)
    -> embedding [B, D]; landmarks float32 [B, K, 2] pixels: each visible
       click moved to the predictor's landmark where that is confident and
       within --refine_radius of it (landmark_model.refined_landmarks), the
       others as given; the embedding is of these, with the given
       visibility

Decoding, resizing, normalising, alignment and heatmap rendering inside the
graph are lmid_tf.data.preprocess's functions, the same ones training used.
Each batch norm that follows a convolution is folded into it
(lmid_tf.speed.fold_batch_norm): the same function to float rounding (1e-5 on the
embedding, tested), fewer ops per request.

--precision=bfloat16 runs the backbone's arithmetic in bfloat16 (variables
and the embedding head stay float32): on a CPU with bf16 instructions
(avx512_bf16, AMX) about twice the images per second for ResNet50. The
embedding is then within 0.02 (L2, of a unit vector) of the float32 export
on the tested models (tests/test_export.py); docs/RESULTS.md, "Serving".
"""

import os

from absl import app
from absl import flags
import keras
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf import files
from lmid_tf.speed import fold_batch_norm
from lmid_tf.modeling import landmark_model
from lmid_tf.speed import precision
from lmid_tf.data import preprocess
from serving import warmup

SERVING_SIGNATURE = 'serving_default'
PREPROCESSED_SIGNATURE = 'preprocessed'
IMAGES_ONLY_SIGNATURE = 'images_only'
REFINED_SIGNATURE = 'refined_landmarks'


class EmbeddingModule(tf.Module):
  """Holds the Keras embedding model (and landmark predictor) and the
  serving functions."""

  def __init__(self, embedder: keras.Model, pre: preprocess.PreprocessConfig,
               predictor: keras.Model = None,
               predictor_pre: preprocess.PreprocessConfig = None,
               refine_radius: float = landmark_model.REFINE_RADIUS):
    super().__init__()
    self.embedder = embedder
    self.pre = pre
    self.predictor, self.predictor_pre = predictor, predictor_pre
    self.refine_radius = refine_radius

  def embed_preprocessed(self, inputs: dict) -> tf.Tensor:
    return self.embedder(inputs, training=False)['embedding']

  def embed_encoded(self, images, landmarks=None, visibility=None):
    return self.embed_preprocessed(preprocess.encoded_inputs(
        images, landmarks, visibility, self.pre))

  def predict(self, images, decoded) -> dict:
    """The predictor's landmark_model.predict_images dict for [B] encoded
    photos, `decoded` by preprocess.decode_batch for the re-ID model."""
    if (self.predictor_pre.image_size, self.predictor_pre.channels) == (
        self.pre.image_size, self.pre.channels):
      # The same decoded images serve both networks: decoding is a good
      # part of what the predictor adds to a single-photo request.
      return landmark_model.predict_images(self.predictor, decoded,
                                           self.pre.channels)
    return landmark_model.predict_encoded(self.predictor, self.predictor_pre,
                                          images)

  def embed_images_only(self, images) -> dict:
    """Photos alone: the predictor finds the landmarks, then as
    serving_default. Landmarks come back in pixels of each photo."""
    decoded, sizes = preprocess.decode_batch(images, self.pre)
    found = self.predict(images, decoded)
    landmarks, visible = landmark_model.found_landmarks(found)
    embedding = self.embed_preprocessed(preprocess.model_inputs(
        decoded, landmarks, visible, self.pre))
    return {'embedding': embedding,
            'landmarks': landmarks * tf.reverse(sizes, axis=[1])[:, None, :],
            'confidence': found['visibility']}

  def embed_refined(self, images, landmarks, visibility) -> dict:
    """Photos with clicks (pixels): the clicks refined by the predictor,
    then as serving_default. The refined landmarks come back in pixels."""
    decoded, sizes = preprocess.decode_batch(images, self.pre)
    clicks = preprocess.normalise_landmarks(landmarks, sizes)
    refined = landmark_model.refined_landmarks(
        clicks, visibility, self.predict(images, decoded), self.refine_radius)
    embedding = self.embed_preprocessed(preprocess.model_inputs(
        decoded, refined, visibility, self.pre))
    return {'embedding': embedding,
            'landmarks': refined * tf.reverse(sizes, axis=[1])[:, None, :]}


def signatures(module: EmbeddingModule) -> dict:
  pre = module.pre
  s, c, k = pre.image_size, pre.channels, pre.num_landmarks
  image_spec = tf.TensorSpec([None, s, s, c], tf.float32, name='image')
  if k:
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name='images'),
        tf.TensorSpec([None, k, 2], tf.float32, name='landmarks'),
        tf.TensorSpec([None, k], tf.float32, name='visibility')])
    def serve(images, landmarks, visibility):
      return {'embedding': module.embed_encoded(images, landmarks, visibility)}
  else:
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name='images')])
    def serve(images):
      return {'embedding': module.embed_encoded(images)}
  if k and pre.heatmap_channels:
    @tf.function(input_signature=[
        image_spec, tf.TensorSpec([None, s, s, k], tf.float32,
                                  name='heatmaps')])
    def serve_preprocessed(image, heatmaps):
      return {'embedding': module.embed_preprocessed(
          {'image': image, 'heatmaps': heatmaps})}
  else:
    # The baseline, or landmarks that only align (--noheatmap_channels).
    @tf.function(input_signature=[image_spec])
    def serve_preprocessed(image):
      return {'embedding': module.embed_preprocessed({'image': image})}
  functions = {SERVING_SIGNATURE: serve,
               PREPROCESSED_SIGNATURE: serve_preprocessed}
  if module.predictor is not None:
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name='images')])
    def serve_images_only(images):
      return module.embed_images_only(images)
    functions[IMAGES_ONLY_SIGNATURE] = serve_images_only

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name='images'),
        tf.TensorSpec([None, k, 2], tf.float32, name='landmarks'),
        tf.TensorSpec([None, k], tf.float32, name='visibility')])
    def serve_refined(images, landmarks, visibility):
      return module.embed_refined(images, landmarks, visibility)
    functions[REFINED_SIGNATURE] = serve_refined
  return functions


def export(model_path: str, export_base: str, version: int = 0,
           landmark_model_path: str = '', serving_precision: str = 'float32',
           refine_radius: float = landmark_model.REFINE_RADIUS) -> str:
  """Exports `model_path` (.keras, preprocess.json beside it), with the
  images_only and refined_landmarks signatures when a landmark predictor is
  given (the latter refining within `refine_radius`); the embedder's
  backbone computes in `serving_precision` (the predictor stays float32).

  Returns the version folder written.
  """
  pre = artifacts.model_preprocess(model_path)
  embedder = keras.saving.load_model(model_path)
  predictor = predictor_pre = None
  if landmark_model_path:
    if not pre.num_landmarks:
      raise ValueError('--landmark_model: this re-ID model takes no '
                       'landmarks')
    predictor, predictor_pre = landmark_model.load(landmark_model_path, pre)
  # These are loaded copies that only ever run inference: each batch norm
  # after a convolution becomes part of it (fold_batch_norm says why).
  for net in (embedder, predictor):
    if net is not None:
      fold_batch_norm.fold(net)
  precision.compute_backbone_in(embedder, serving_precision)
  if not refine_radius > 0:
    raise ValueError(f'--refine_radius={refine_radius}: must be > 0')
  module = EmbeddingModule(embedder, pre, predictor, predictor_pre,
                           refine_radius)
  version = version or artifacts.next_version(export_base)
  final = os.path.join(export_base, str(version))
  if os.path.exists(final):
    raise ValueError(f'{final} exists: versions are never overwritten')
  os.makedirs(export_base, exist_ok=True)
  # The temporary name is not a number, so TF Serving never loads it.
  with files.replacing(final) as tmp:
    tf.saved_model.save(module, tmp, signatures=signatures(module))
    os.makedirs(os.path.join(tmp, 'assets.extra'), exist_ok=True)
    artifacts.write_text(os.path.join(tmp, artifacts.SAVEDMODEL_PREPROCESS),
                         pre.to_json())
    warmup.write(tmp, pre)
  return final


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('run_dir', '', 'Training run folder (uses its '
                      'embedding_model.keras).')
  flags.DEFINE_string('model', '', 'Or: a .keras embedding model with '
                      'preprocess.json beside it.')
  flags.DEFINE_string('export_base', '', 'TF Serving model base folder; '
                      'default: <run_dir>/export.')
  flags.DEFINE_integer('version', 0, 'Version number; 0: next free.')
  flags.DEFINE_string('landmark_model', '', 'A landmark_model.keras from '
                      'lmid_tf.train_landmarks: adds the images_only '
                      '(photos without landmarks) and refined_landmarks '
                      '(clicks refined by the predictor) signatures.')
  flags.DEFINE_float('refine_radius', landmark_model.REFINE_RADIUS,
                     'refined_landmarks: how far (fraction of the image '
                     'width) a prediction may lie from a click and replace '
                     'it.')
  flags.DEFINE_enum('precision', 'float32', precision.SERVING_PRECISIONS,
                    'What the backbone computes in: float32 (equal to the '
                    'Keras model to 1e-5) or bfloat16 (faster on CPUs with '
                    'bf16 instructions; embeddings within 0.02).')


def main(argv):
  del argv
  model_path = FLAGS.model or (FLAGS.run_dir and os.path.join(
      FLAGS.run_dir, artifacts.EMBEDDING_MODEL))
  if not model_path:
    raise app.UsageError('--run_dir or --model is required')
  export_base = FLAGS.export_base or os.path.join(
      FLAGS.run_dir or os.path.dirname(model_path), artifacts.EXPORT_DIR)
  written = export(model_path, export_base, FLAGS.version,
                   FLAGS.landmark_model, FLAGS.precision,
                   FLAGS.refine_radius)
  print(f'export: wrote {written}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'export')

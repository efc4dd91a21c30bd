r"""Trains the body-landmark predictor from the same TFRecords as re-ID.

  python -m lmid_tf.train_landmarks --flagfile=configs/landmarks_cpu.flags \
      --data=data/body/tfrecords --run_dir=runs/landmarks

Uses the train split only, with the same joint augmentation as re-ID
training (rotation, zoom, shift move image and landmarks together; no NLA or
MLA: the targets are the true landmarks). The phases' learning rates and
epochs are its schedule. Writes to --run_dir:
landmark_model.keras, preprocess.json, and eval/ with the error on the test
identities (gallery + query splits) beside the no-image baseline (the train
split's mean landmark positions), and landmarks.png (annotated dots,
predicted crosses).

Its flags are the re-ID settings it uses (PREDICTOR_SETTINGS), plus the
predictor's own --landmark_width and --landmark_depths.
"""

import dataclasses
import os

from absl import app
from absl import flags
import cv2
import keras
import numpy as np
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf import config
from lmid_tf import files
from lmid_tf.modeling import landmark_model
from lmid_tf.data import overlay
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess
from lmid_tf.data import records
from lmid_tf.evaluation import embedding as embedding_lib


def predictor_config(cfg: config.TrainConfig) -> tuple:
  """(PreprocessConfig, TrainInputConfig) of the predictor: unaligned images
  without heatmaps, and the true landmarks as targets."""
  pre = dataclasses.replace(cfg.preprocess, template=(),
                            heatmap_channels=False)
  inputs = dataclasses.replace(cfg.inputs, nla=False, mla=False)
  return pre, inputs


def landmark_errors(predicted, visibility, annotated, visible,
                    threshold: float = 0.5) -> dict:
  """Landmark error on normalised coordinates, as % of the image size.

  Args:
    predicted: [N, K, 2]; visibility: [N, K] predicted probabilities;
    annotated: [N, K, 2]; visible: [N, K] 0/1.

  Returns:
    {'mean', 'median' (% of the image size, over annotated landmarks),
     'pck5', 'pck10' (share within 5 % / 10 %), 'visibility_accuracy',
     'landmarks' (count)}
  """
  shown = np.asarray(visible) > 0
  distance = np.linalg.norm(np.asarray(predicted) - annotated, axis=-1)[shown]
  if not distance.size:
    raise ValueError('no annotated landmark to measure the error on')
  return {'mean': float(100 * distance.mean()),
          'median': float(100 * np.median(distance)),
          'pck5': float(np.mean(distance <= 0.05)),
          'pck10': float(np.mean(distance <= 0.10)),
          'visibility_accuracy': float(np.mean(
              (np.asarray(visibility) > threshold) == shown)),
          'landmarks': int(shown.sum())}


def predict_split(predict_fn, data_dir: str, split: str,
                  pre: preprocess.PreprocessConfig, batch_size: int) -> dict:
  """Predictions and annotations of one split, unaugmented."""
  def per_batch(batch):
    out = predict_fn(batch['image'])
    return {'predicted': out['landmarks'], 'visibility': out['visibility'],
            'annotated': batch['landmarks'], 'visible': batch['visible'],
            'images': batch['raw_image']}
  return embedding_lib.collect(
      pipeline.eval_dataset(data_dir, split, pre, batch_size), per_batch)


def mean_shape(data_dir: str) -> np.ndarray:
  """[K, 2] mean of the train split's visible landmarks: the no-image
  baseline every predictor must beat."""
  metadata, serialized = records.read_split(data_dir, 'train')
  total = np.zeros((metadata.num_landmarks, 2))
  count = np.zeros((metadata.num_landmarks, 1))
  for batch in tf.data.Dataset.from_tensor_slices(serialized).batch(1024).map(
          lambda s: records.parse(s, metadata.num_landmarks)):
    visible = batch['visible'].numpy()[..., None]
    total += (batch['landmarks'].numpy() * visible).sum(0)
    count += visible.sum(0)
  return total / np.maximum(count, 1)


def sheet(split: dict, count: int = 16, scale: int = 2) -> np.ndarray:
  """Annotated landmarks as dots, predicted ones as crosses, same colours."""
  tiles = []
  for i in range(min(count, len(split['images']))):
    tile = overlay.colourise(split['images'][i])
    tile = cv2.resize(tile, None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_NEAREST)
    tile = overlay.draw_landmarks(tile, split['annotated'][i],
                                  split['visible'][i], radius=3)
    h, w = tile.shape[:2]
    for k, ((x, y), p) in enumerate(zip(split['predicted'][i],
                                        split['visibility'][i])):
      colour = tuple(int(c) for c in overlay.COLOURS[
          k % len(overlay.COLOURS)] * 255)
      if p > 0.5:
        cv2.drawMarker(tile, (int(x * w), int(y * h)), colour,
                       cv2.MARKER_CROSS, 10, 2)
    tiles.append(tile)
  return overlay.grid(tiles, 8)


def evaluate_predictor(predict_fn, data_dir: str,
                       pre: preprocess.PreprocessConfig, out_dir: str,
                       batch_size: int = 64) -> dict:
  """Errors on the test identities (gallery + query), and of the mean
  shape, written to out_dir/landmarks.json with a picture."""
  splits = [predict_split(predict_fn, data_dir, s, pre, batch_size)
            for s in ('gallery', 'query')]
  joined = {k: np.concatenate([s[k] for s in splits]) for k in splits[0]}
  mean = mean_shape(data_dir)
  results = {
      'predictor': landmark_errors(joined['predicted'], joined['visibility'],
                                   joined['annotated'], joined['visible']),
      'mean_shape': landmark_errors(
          np.broadcast_to(mean, joined['annotated'].shape),
          np.ones(joined['visible'].shape), joined['annotated'],
          joined['visible']),
  }
  os.makedirs(out_dir, exist_ok=True)
  artifacts.write_json(os.path.join(out_dir, 'landmarks.json'), results)
  overlay.write_png(os.path.join(out_dir, 'landmarks.png'), sheet(splits[1]))
  return results


def format_errors(errors: dict) -> str:
  return (f'mean {errors["mean"]:.2f}%  median {errors["median"]:.2f}%  '
          f'PCK@5% {100 * errors["pck5"]:.1f}%  PCK@10% '
          f'{100 * errors["pck10"]:.1f}%  visibility '
          f'{100 * errors["visibility_accuracy"]:.1f}%')


def train_landmarks(cfg: config.TrainConfig, width: int = 16,
                    depths: tuple = (2, 2, 2, 2)) -> dict:
  """Trains the predictor through cfg's phases; returns the evaluation."""
  metadata = records.read_metadata(cfg.data)
  if not metadata.num_landmarks:
    raise ValueError(f'{cfg.data}: the dataset has no landmarks')
  pre, inputs = predictor_config(cfg)
  pre = dataclasses.replace(pre, num_landmarks=metadata.num_landmarks,
                            landmark_names=metadata.landmark_names)
  net = landmark_model.build_landmark_model(
      landmark_model.LandmarkModelConfig(cfg.preprocess.image_size,
                                         metadata.channels,
                                         metadata.num_landmarks, width,
                                         tuple(depths)))
  trainer = landmark_model.LandmarkTrainer(net)
  loaded = pipeline.load_train_records(cfg.data)
  batch = inputs.identities_per_batch * inputs.images_per_identity
  steps = cfg.steps_per_epoch or max(1, len(loaded[1]) // batch)
  os.makedirs(cfg.run_dir, exist_ok=True)
  done = 0
  for phase in cfg.phases:
    print(f'train_landmarks: phase {phase.name} (lr {phase.lr:g}; '
          f'{phase.epochs} epochs)', flush=True)
    trainer.compile(keras.optimizers.Adam(phase.lr))
    dataset = pipeline.train_dataset(cfg.data, pre, inputs, loaded,
                                     start_step=done * steps)
    lr = keras.callbacks.LearningRateScheduler(phase.learning_rate)
    trainer.fit(dataset, epochs=phase.epochs, steps_per_epoch=steps,
                verbose=2, callbacks=[lr])
    done += phase.epochs
  path = os.path.join(cfg.run_dir, landmark_model.LANDMARK_MODEL)
  with files.replacing(path, '.keras') as tmp:
    net.save(tmp)
  artifacts.write_preprocess(cfg.run_dir, pre)
  run = tf.function(lambda x: net(x, training=False))
  return evaluate_predictor(
      lambda images: {k: v.numpy() for k, v in run(images).items()},
      cfg.data, pre, os.path.join(cfg.run_dir, artifacts.EVAL_DIR),
      cfg.eval_batch_size)


FLAGS = flags.FLAGS

# The lmid_tf.train settings that mean something to the predictor; any other
# is refused as an unknown flag rather than silently ignored.
PREDICTOR_SETTINGS = (
    'data', 'run_dir', 'image_size', 'identities_per_batch',
    'images_per_identity', 'rotation', 'zoom', 'translation', 'brightness',
    'contrast', 'erase', 'lighting', 'seed', 'phase', 'steps_per_epoch',
    'eval_batch_size')


def main(argv):
  del argv
  if not FLAGS.data or not FLAGS.run_dir:
    raise app.UsageError('--data and --run_dir are required')
  settings = dataclasses.replace(
      config.from_flags(FLAGS, PREDICTOR_SETTINGS), align=False,
      variant='landmark_id', init='none')
  try:
    depths = tuple(int(d) for d in FLAGS.landmark_depths)
  except ValueError:
    depths = ()
  if len(depths) != 4 or min(depths) < 1:
    raise app.UsageError(f'--landmark_depths={",".join(FLAGS.landmark_depths)}'
                         ': four whole numbers of at least 1 (each block '
                         'halves the resolution with its first convolution)')
  results = train_landmarks(config.build(settings), FLAGS.landmark_width,
                            depths)
  print(f'train_landmarks: test identities: '
        f'{format_errors(results["predictor"])}')
  print(f'train_landmarks: mean shape (no image): '
        f'{format_errors(results["mean_shape"])}; wrote {FLAGS.run_dir}')


if __name__ == '__main__':
  config.define_flags(names=PREDICTOR_SETTINGS)
  flags.DEFINE_integer('landmark_width', 16, 'Channels of the predictor\'s '
                       'first block (doubled twice after it); what 16 adds '
                       'to a serving request is in docs/BENCHMARKS.md.')
  flags.DEFINE_list('landmark_depths', ['2', '2', '2', '2'], 'Convolutions '
                    'in each of the predictor\'s 4 blocks.')
  cli.run(main, 'train_landmarks')

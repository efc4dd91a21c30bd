r"""Trains Landmark-Id (or the baseline) phase by phase.

  python -m lmid_tf.train --flagfile=configs/synthetic_cpu.flags \
      --data=data/synthetic/tfrecords --run_dir=runs/lmid

Everything goes into --run_dir: config.json, preprocess.json,
checkpoint/ (every epoch; rerunning the same command resumes at the phase
and epoch where it stopped), logs/ (TensorBoard: losses, learning rate,
evaluation top-k and mAP, heatmaps beside their reconstructions, the gallery
embedding projector), embedding_model.keras and eval/ (final evaluation).
"""

import dataclasses
import json
import os
import sys
import warnings

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from lmid_tf import augment
from lmid_tf import evaluate
from lmid_tf import model as model_lib
from lmid_tf import objective
from lmid_tf import pipeline
from lmid_tf import preprocess
from lmid_tf import records
from lmid_tf import schedule
from lmid_tf import tensorboard_logging

STATE_FILE = 'state.json'
WEIGHTS_FILE = 'weights.weights.h5'


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  data: str
  run_dir: str
  model: model_lib.ModelConfig
  preprocess: preprocess.PreprocessConfig
  inputs: pipeline.TrainInputConfig
  losses: objective.LossConfig
  phases: tuple
  steps_per_epoch: int = 0        # 0: one pass over the train images
  eval_every: int = 10            # epochs; 0 evaluates only at the end
  eval_batch_size: int = 64
  distribution: str = 'default'   # default, mirrored, multi_worker
  mixed_precision: bool = False


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    # Reads the cluster from the TF_CONFIG environment variable.
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f'unknown --distribution {name!r} (default, mirrored, '
                   'multi_worker)')


class Checkpointer(keras.callbacks.Callback):
  """Saves weights and the schedule position after every epoch.

  Files are written under temporary names and renamed, so a kill at any
  moment leaves the previous checkpoint intact.
  """

  def __init__(self, directory: str, phase_index: int, num_epochs: int):
    super().__init__()
    self.directory, self.phase_index = directory, phase_index
    self.num_epochs = num_epochs

  def on_epoch_end(self, epoch, logs=None):
    done = epoch + 1 >= self.num_epochs
    save_checkpoint(self.model, self.directory,
                    self.phase_index + 1 if done else self.phase_index,
                    0 if done else epoch + 1)


def save_checkpoint(trainer, directory, phase_index, epoch):
  os.makedirs(directory, exist_ok=True)
  weights = os.path.join(directory, WEIGHTS_FILE)
  trainer.save_weights(weights + '.tmp.weights.h5')
  state = os.path.join(directory, STATE_FILE)
  with open(state + '.tmp', 'w') as f:
    json.dump({'phase_index': phase_index, 'epoch': epoch}, f)
  # Weights first: a state never points at weights that are not there yet.
  os.replace(weights + '.tmp.weights.h5', weights)
  os.replace(state + '.tmp', state)


def load_checkpoint(trainer, directory) -> tuple:
  """Returns (phase_index, epoch) to resume at; (0, 0) when starting."""
  state = os.path.join(directory, STATE_FILE)
  if not os.path.exists(state):
    return 0, 0
  with open(state) as f:
    position = json.load(f)
  trainer.load_weights(os.path.join(directory, WEIGHTS_FILE))
  return position['phase_index'], position['epoch']


class LearningRate(keras.callbacks.Callback):
  def __init__(self, phase: schedule.Phase):
    super().__init__()
    self.phase = phase

  def on_epoch_begin(self, epoch, logs=None):
    self.model.optimizer.learning_rate.assign(self.phase.learning_rate(epoch))


def _check_config(cfg: TrainConfig, metadata: records.Metadata):
  p, k = cfg.inputs.identities_per_batch, cfg.inputs.images_per_identity
  if p < 2 or k < 2:
    raise ValueError('identities_per_batch and images_per_identity must be '
                     '>= 2: the triplet loss needs positives and negatives')
  if cfg.model.num_landmarks and (cfg.inputs.mla_min_visible >
                                  metadata.num_landmarks):
    raise ValueError(f'--mla_min_visible={cfg.inputs.mla_min_visible} but the '
                     f'data has {metadata.num_landmarks} landmarks')
  if cfg.preprocess.falloff < 0 or cfg.model.landmark_pooling_bins < 0:
    raise ValueError('--heatmap_falloff and --landmark_pooling_bins must be '
                     '>= 0')
  if cfg.model.landmark_pooling_bins and not cfg.model.num_landmarks:
    raise ValueError('--landmark_pooling_bins needs landmarks: the baseline '
                     'has no heatmaps to pool by')
  if not cfg.phases:
    raise ValueError('no training phases')


def train(cfg: TrainConfig) -> dict:
  """Runs every phase not yet done, then the final evaluation.

  Returns the final evaluation results.
  """
  metadata = records.read_metadata(cfg.data)
  _check_config(cfg, metadata)
  os.makedirs(cfg.run_dir, exist_ok=True)
  with open(os.path.join(cfg.run_dir, 'config.json'), 'w') as f:
    json.dump(dataclasses.asdict(cfg), f, indent=2, default=str)
  with open(os.path.join(cfg.run_dir, evaluate.PREPROCESS_FILE), 'w') as f:
    f.write(cfg.preprocess.to_json())

  if cfg.mixed_precision:
    # float16 needs a GPU to be fast; bfloat16 is what CPUs accelerate.
    gpu = bool(tf.config.list_physical_devices('GPU'))
    keras.mixed_precision.set_global_policy(
        'mixed_float16' if gpu else 'mixed_bfloat16')

  loaded = pipeline.load_train_records(cfg.data)
  num_images = len(loaded[1])
  batch = cfg.inputs.identities_per_batch * cfg.inputs.images_per_identity
  steps = cfg.steps_per_epoch or max(1, num_images // batch)

  strategy = make_strategy(cfg.distribution)
  with strategy.scope():
    net = model_lib.build_model(cfg.model)
    trainer = objective.Objective(net, cfg.model.num_classes, cfg.losses)
  embedder = model_lib.embedding_model(net)
  run_embedder = tf.function(
      lambda x: embedder(x, training=False)['embedding'])
  embed_fn = lambda x: run_embedder(x).numpy()
  checkpoint_dir = os.path.join(cfg.run_dir, 'checkpoint')
  start_phase, start_epoch = load_checkpoint(trainer, checkpoint_dir)
  if start_phase:
    logging.info('resuming at phase %d, epoch %d', start_phase, start_epoch)

  logs = tensorboard_logging.Monitor(
      os.path.join(cfg.run_dir, 'logs'), embedder, net, cfg.data,
      cfg.preprocess, cfg.eval_every, cfg.eval_batch_size,
      pipeline.train_dataset(cfg.data, cfg.preprocess, cfg.inputs, loaded))
  for index, phase in enumerate(cfg.phases):
    initial = start_epoch if index == start_phase else 0
    if index < start_phase or initial >= phase.epochs:
      continue
    print(f'train: phase {phase.name} (trains {",".join(phase.trains)}; '
          f'lr {phase.lr:g}; epochs {initial}..{phase.epochs})', flush=True)
    with strategy.scope():
      # Changing `trainable` takes effect at compile.
      # A head without a loss would only collect warnings about no gradient.
      model_lib.set_trainable(net, phase.trains,
                              frozen=() if phase.reconstruct else
                              ('reconstruction',))
      trainer.compile(keras.optimizers.Adam(phase.lr),
                      reconstruct=phase.reconstruct)
    phase_start = sum(p.epochs for p in cfg.phases[:index])
    logs.start_phase(phase, phase_start)
    # Every epoch of the whole schedule sees new batches, also on resume.
    dataset = pipeline.train_dataset(cfg.data, cfg.preprocess, cfg.inputs,
                                     loaded,
                                     start_step=(phase_start + initial) * steps)
    trainer.fit(dataset, epochs=phase.epochs, initial_epoch=initial,
                steps_per_epoch=steps, verbose=2, shuffle=False,
                callbacks=[LearningRate(phase), logs,
                           Checkpointer(checkpoint_dir, index, phase.epochs)])
    if index < len(cfg.phases) - 1:
      # Each stage's accuracy, as in the paper's tables (stage 1 vs 2).
      results = evaluate.evaluate(
          embed_fn, cfg.data, cfg.preprocess,
          os.path.join(cfg.run_dir, 'eval', phase.name), cfg.eval_batch_size,
          title=f'{os.path.basename(cfg.run_dir)} after {phase.name}')
      print(f'train: after {phase.name}: '
            f'{evaluate.format_results(results)}', flush=True)

  model_path = os.path.join(cfg.run_dir, 'embedding_model.keras')
  embedder.save(model_path + '.tmp.keras')
  os.replace(model_path + '.tmp.keras', model_path)
  results = evaluate.evaluate(embed_fn, cfg.data,
                              cfg.preprocess,
                              os.path.join(cfg.run_dir, 'eval'),
                              cfg.eval_batch_size,
                              title=os.path.basename(cfg.run_dir))
  logs.final(results, sum(p.epochs for p in cfg.phases))
  results.pop('_embedded')
  return results


FLAGS = flags.FLAGS


def define_flags():
  """Every training flag; configs/*.flags set them for whole experiments."""
  f = flags
  f.DEFINE_string('data', None, 'Dataset folder from data_tools.convert.')
  f.DEFINE_string('run_dir', None, 'Output folder; rerun to resume.')
  f.DEFINE_enum('variant', 'landmark_id', ['landmark_id', 'baseline'],
                'Landmark-Id (image + heatmaps) or the image-only baseline.')
  f.DEFINE_enum('backbone', 'resnet50', sorted(model_lib.BACKBONES),
                'keras.applications backbone.')
  f.DEFINE_string('init', 'imagenet', "Backbone weights: 'imagenet' "
                  "(downloads), 'none' (random), or a .h5/.weights.h5 path.")
  f.DEFINE_integer('image_size', 128, 'Model input side in pixels.')
  f.DEFINE_integer('embedding_dim', 256, 'Embedding size.')
  f.DEFINE_float('heatmap_radius', 0.05, 'Heatmap blob radius, fraction of '
                 'the image size.')
  f.DEFINE_float('heatmap_falloff', 0.0, 'Linear ramp to 0 beyond the blob, '
                 'fraction of the image size (0: the paper\'s disk).')
  f.DEFINE_integer('landmark_pooling_bins', 0, 'Landmark-Id: > 0 adds the '
                   'landmark pooling branch with this many position bins '
                   '(model.py; use with --heatmap_falloff).')
  f.DEFINE_integer('identities_per_batch', 16, 'P of the P x K batch.')
  f.DEFINE_integer('images_per_identity', 4, 'K of the P x K batch.')
  f.DEFINE_integer('steps_per_epoch', 0, '0: train images / batch size.')
  f.DEFINE_float('rotation', 360.0, 'Max rotation in degrees.')
  f.DEFINE_float('zoom', 0.2, 'Max zoom, fraction.')
  f.DEFINE_float('translation', 0.2, 'Max translation, fraction of size.')
  f.DEFINE_float('brightness', 0.0, 'Max brightness jitter ([0, 1] scale).')
  f.DEFINE_float('contrast', 0.0, 'Max contrast jitter, fraction.')
  f.DEFINE_bool('nla', True, 'Noisy landmark augmentation.')
  f.DEFINE_float('nla_strength', 1.0, 'NLA offset, fraction of the radius.')
  f.DEFINE_bool('mla', True, 'Missing landmark augmentation.')
  f.DEFINE_integer('mla_min_visible', 2, 'MLA: minimum visible landmarks M.')
  f.DEFINE_float('mla_probability', 0.5, 'MLA: hiding probability p.')
  f.DEFINE_float('label_smoothing', 0.1, 'ID loss label smoothing.')
  f.DEFINE_float('triplet_margin', 0.3, 'Triplet loss margin.')
  f.DEFINE_float('center_weight', 5e-4, 'Center loss weight beta.')
  f.DEFINE_float('center_lr', 0.5, 'SGD learning rate of the class centres.')
  f.DEFINE_float('heatmap_weight', 1.0, 'Reconstruction loss weight alpha.')
  f.DEFINE_enum('schedule', 'auto', ['auto', 'landmark_id', 'baseline'],
                'Built-in schedule; auto follows --variant.')
  f.DEFINE_float('lr', 3.5e-4, 'Base learning rate of built-in schedules.')
  f.DEFINE_integer('stage1_epochs', 120, 'Landmark-Id stage 1b epochs.')
  f.DEFINE_integer('adapt_epochs', 10, 'Landmark-Id stages 1a and 2a epochs.')
  f.DEFINE_integer('stage2_epochs', 60, 'Landmark-Id stage 2b epochs.')
  f.DEFINE_integer('epochs', 120, 'Baseline epochs.')
  f.DEFINE_multi_string('phase', [], 'Explicit phases, replacing the '
                        'built-in schedule: "name trains=g1,g2 lr=X '
                        'epochs=N [reconstruct=1] [warmup_epochs=N] '
                        '[decay_epochs=a,b]". Groups: '
                        + ', '.join(model_lib.GROUPS) + ', all.')
  f.DEFINE_integer('eval_every', 10, 'Evaluate every N epochs (0: at the '
                   'end only).')
  f.DEFINE_integer('eval_batch_size', 64, 'Evaluation batch size.')
  f.DEFINE_enum('distribution', 'default',
                ['default', 'mirrored', 'multi_worker'], 'tf.distribute '
                'strategy (multi_worker reads TF_CONFIG).')
  f.DEFINE_bool('mixed_precision', False, 'mixed_float16 on GPU, '
                'mixed_bfloat16 on CPU.')
  f.DEFINE_integer('seed', 0, 'Seed of batches and augmentation.')


def config_from_flags(fv) -> TrainConfig:
  metadata = records.read_metadata(fv.data)
  landmarks = metadata.num_landmarks if fv.variant == 'landmark_id' else 0
  num_classes = metadata.splits['train'].get('num_classes') or len(
      metadata.identities)
  if fv.phase:
    phases = tuple(schedule.parse_phase(p) for p in fv.phase)
  elif (fv.schedule if fv.schedule != 'auto' else fv.variant) == 'baseline':
    phases = schedule.baseline(fv.lr, fv.epochs)
  else:
    phases = schedule.landmark_id(fv.lr, fv.stage1_epochs, fv.adapt_epochs,
                                  fv.stage2_epochs)
  if not landmarks and any(p.reconstruct for p in phases):
    raise ValueError('the baseline has no heatmaps to reconstruct: use '
                     '--schedule=baseline or phases without reconstruct=1')
  pre = preprocess.PreprocessConfig(
      image_size=fv.image_size, channels=metadata.channels,
      num_landmarks=landmarks, radius=fv.heatmap_radius,
      falloff=fv.heatmap_falloff)
  return TrainConfig(
      data=fv.data, run_dir=fv.run_dir,
      model=model_lib.ModelConfig(
          num_classes=num_classes, image_size=fv.image_size,
          channels=metadata.channels, num_landmarks=landmarks,
          backbone=fv.backbone, embedding_dim=fv.embedding_dim,
          reconstruction=any(p.reconstruct for p in phases), init=fv.init,
          landmark_pooling_bins=fv.landmark_pooling_bins),
      preprocess=pre,
      inputs=pipeline.TrainInputConfig(
          identities_per_batch=fv.identities_per_batch,
          images_per_identity=fv.images_per_identity,
          augmentation=augment.AugmentConfig(
              max_rotation=fv.rotation, max_zoom=fv.zoom,
              max_translation=fv.translation, brightness=fv.brightness,
              contrast=fv.contrast),
          nla=fv.nla, nla_strength=fv.nla_strength, mla=fv.mla,
          mla_min_visible=fv.mla_min_visible,
          mla_probability=fv.mla_probability, seed=fv.seed),
      losses=objective.LossConfig(
          label_smoothing=fv.label_smoothing,
          triplet_margin=fv.triplet_margin, center_weight=fv.center_weight,
          center_lr=fv.center_lr, heatmap_weight=fv.heatmap_weight),
      phases=phases, steps_per_epoch=fv.steps_per_epoch,
      eval_every=fv.eval_every, eval_batch_size=fv.eval_batch_size,
      distribution=fv.distribution, mixed_precision=fv.mixed_precision)


def main(argv):
  del argv
  if not FLAGS.data or not FLAGS.run_dir:
    raise app.UsageError('--data and --run_dir are required')
  # keras.applications warns about inputs with other than 3 channels, which
  # is the point of Landmark-Id.
  warnings.filterwarnings('ignore', message='This model usually expects')
  try:
    cfg = config_from_flags(FLAGS)
    results = train(cfg)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'train: error: {e}')
  print(f'train: {evaluate.format_results(results)}; wrote {cfg.run_dir}')


if __name__ == '__main__':
  define_flags()
  app.run(main)

r"""Trains Landmark-Id (or the baseline) phase by phase.

  python -m lmid_tf.train --flagfile=configs/synthetic_cpu_landmark_pooling.flags \
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

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf import config
from lmid_tf import evaluate
from lmid_tf import model as model_lib
from lmid_tf import objective
from lmid_tf import pipeline
from lmid_tf import records
from lmid_tf import schedule
from lmid_tf import tensorboard_logging

STATE_FILE = 'state.json'
WEIGHTS_FILE = 'weights.weights.h5'


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
  # Weights first: a state never points at weights that are not there yet.
  os.replace(weights + '.tmp.weights.h5', weights)
  artifacts.write_json(os.path.join(directory, STATE_FILE),
                       {'phase_index': phase_index, 'epoch': epoch})


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


def _check_config(cfg: config.TrainConfig, metadata: records.Metadata):
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


def train(cfg: config.TrainConfig) -> dict:
  """Runs every phase not yet done, then the final evaluation.

  Returns the final evaluation results.
  """
  metadata = records.read_metadata(cfg.data)
  _check_config(cfg, metadata)
  os.makedirs(cfg.run_dir, exist_ok=True)
  artifacts.write_json(os.path.join(cfg.run_dir, artifacts.CONFIG_FILE),
                       dataclasses.asdict(cfg))
  artifacts.write_preprocess(cfg.run_dir, cfg.preprocess)

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
  checkpoint_dir = os.path.join(cfg.run_dir, artifacts.CHECKPOINT_DIR)
  start_phase, start_epoch = load_checkpoint(trainer, checkpoint_dir)
  if start_phase:
    logging.info('resuming at phase %d, epoch %d', start_phase, start_epoch)

  logs = tensorboard_logging.Monitor(
      os.path.join(cfg.run_dir, artifacts.LOGS_DIR), embedder, net, cfg.data,
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
      stage = evaluate.evaluate(
          embed_fn, cfg.data, cfg.preprocess,
          os.path.join(cfg.run_dir, artifacts.EVAL_DIR, phase.name),
          cfg.eval_batch_size,
          title=f'{os.path.basename(cfg.run_dir)} after {phase.name}')
      print(f'train: after {phase.name}: '
            f'{evaluate.format_results(stage.metrics)}', flush=True)

  model_path = os.path.join(cfg.run_dir, artifacts.EMBEDDING_MODEL)
  embedder.save(model_path + '.tmp.keras')
  os.replace(model_path + '.tmp.keras', model_path)
  final = evaluate.evaluate(embed_fn, cfg.data, cfg.preprocess,
                            os.path.join(cfg.run_dir, artifacts.EVAL_DIR),
                            cfg.eval_batch_size,
                            title=os.path.basename(cfg.run_dir))
  logs.final(final, sum(p.epochs for p in cfg.phases))
  return final.metrics


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.data or not FLAGS.run_dir:
    raise app.UsageError('--data and --run_dir are required')
  cfg = config.build(config.from_flags(FLAGS))
  metrics = train(cfg)
  print(f'train: {evaluate.format_results(metrics)}; wrote {cfg.run_dir}')


if __name__ == '__main__':
  config.define_flags()
  cli.run(main, 'train')

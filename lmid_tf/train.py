r"""Trains Landmark-Id (or the baseline) phase by phase.

  python -m lmid_tf.train --flagfile=configs/synthetic_cpu.flags \
      --run_dir=runs/synthetic_cpu

Everything goes into --run_dir: config.json, preprocess.json,
checkpoint/ (every epoch, with the optimizer state: rerunning the same
command resumes exactly where the last epoch ended), logs/ (TensorBoard:
losses, learning rate, evaluation top-k and mAP, heatmaps beside their
reconstructions, the gallery embedding projector), embedding_model.keras
and eval/ (final evaluation).

With --distribution=multi_worker, every worker runs this same command with
its own TF_CONFIG; only the chief writes into --run_dir (README, "Training
on several machines").
"""

import dataclasses
import os
import shutil
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf import files
from lmid_tf.training import checkpoints
from lmid_tf.training import determinism
from lmid_tf import cli
from lmid_tf import config
from lmid_tf.speed import conv_gradients
from lmid_tf.speed import fused_adam
from lmid_tf.speed import fused_batch_norm
from lmid_tf.modeling import landmark_model
from lmid_tf.modeling import model as model_lib
from lmid_tf.modeling import objective
from lmid_tf.data import pipeline
from lmid_tf.speed import precision
from lmid_tf.speed import upsampling
from lmid_tf.data import records
from lmid_tf.training import tensorboard_logging
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import retrieval

def make_strategy(name: str, worker_timeout: int = 120
                  ) -> tf.distribute.Strategy:
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    # Reads the cluster from the TF_CONFIG environment variable. The
    # timeout bounds how long a step waits for a worker that died.
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=worker_timeout))
  raise ValueError(f'unknown --distribution {name!r} (default, mirrored, '
                   'multi_worker)')


def worker_role(strategy: tf.distribute.Strategy) -> tuple:
  """(is_chief, name) of this process: the chief is task 'chief', or
  worker 0 of a cluster without one; a single process is its own chief."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  cluster = resolver.cluster_spec().as_dict() if resolver else {}
  if not cluster:
    return True, 'chief'
  name = f'{resolver.task_type} {resolver.task_id}'
  if 'chief' in cluster:
    return resolver.task_type == 'chief', name
  return (resolver.task_type == 'worker' and resolver.task_id == 0), name


def distributed_dataset(strategy: tf.distribute.Strategy, make):
  """`make(num_replicas, replicas)` -> dataset, distributed so that each
  replica gets its own share of every batch (whole identities)."""
  if strategy.num_replicas_in_sync == 1:
    return make(1, (0,))

  def per_input_pipeline(context: tf.distribute.InputContext):
    local = context.num_replicas_in_sync // context.num_input_pipelines
    first = context.input_pipeline_id * local
    return make(context.num_replicas_in_sync,
                tuple(range(first, first + local)))

  return strategy.distribute_datasets_from_function(per_input_pipeline)


class Checkpointer(keras.callbacks.Callback):
  """Saves a checkpoint after every epoch (checkpoints.Checkpoints)."""

  def __init__(self, saver: checkpoints.Checkpoints, phase_index: int,
               num_epochs: int, epochs_before: int):
    super().__init__()
    self.saver, self.phase_index = saver, phase_index
    self.num_epochs, self.epochs_before = num_epochs, epochs_before

  def on_epoch_end(self, epoch, logs=None):
    done = epoch + 1 >= self.num_epochs
    self.saver.save(self.phase_index + 1 if done else self.phase_index,
                    0 if done else epoch + 1,
                    number=self.epochs_before + epoch + 1)


# What a collective op raises when another worker stops answering.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError,
               tf.errors.InternalError)


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

  Returns the final evaluation results (on a non-chief worker, which
  evaluates nothing: {'weights': fingerprint}).
  """
  metadata = records.read_metadata(cfg.data)
  _check_config(cfg, metadata)
  if cfg.deterministic:
    determinism.enable(cfg.seed)
    print(f'train: --deterministic: seed {cfg.seed}, deterministic kernels, '
          "Grappler's memory optimizer off", flush=True)
  dtype_policy = precision.for_this_machine(cfg.precision, cfg.model.backbone)

  strategy = make_strategy(cfg.distribution, cfg.worker_timeout)
  chief, role = worker_role(strategy)
  checkpoint_dir = os.path.join(cfg.run_dir, artifacts.CHECKPOINT_DIR)
  # Saving is collective, so every worker saves; only the chief's files are
  # kept (the others go to a scratch folder, removed at the end).
  scratch = '' if chief else tempfile.mkdtemp(prefix='lmid_tf_worker_')
  saver = checkpoints.Checkpoints(scratch or checkpoint_dir,
                                  read_from=checkpoint_dir)
  start_phase, start_epoch = checkpoints.read_position(checkpoint_dir)
  if chief:
    os.makedirs(cfg.run_dir, exist_ok=True)
    artifacts.write_json(os.path.join(cfg.run_dir, artifacts.CONFIG_FILE),
                         dataclasses.asdict(cfg))
    artifacts.write_preprocess(cfg.run_dir, cfg.preprocess)

  loaded = pipeline.load_train_records(cfg.data)
  if cfg.train_landmark_model:
    predictor = landmark_model.load(cfg.train_landmark_model, cfg.preprocess)
    print(f'train: landmarks of the train split from '
          f'{cfg.train_landmark_model}', flush=True)
    loaded = (loaded[0], np.array(landmark_model.with_predicted_landmarks(
        loaded[1], predictor), dtype=object), loaded[2])
  num_images = len(loaded[1])
  batch = cfg.inputs.identities_per_batch * cfg.inputs.images_per_identity
  steps = cfg.steps_per_epoch or max(1, num_images // batch)

  with strategy.scope(), precision.building_under(dtype_policy):
    net = model_lib.build_model(cfg.model)
    trainer = objective.Objective(net, cfg.model.num_classes, cfg.losses)
  if strategy.num_replicas_in_sync > 1:
    model_lib.synchronize_batch_norm(net)
  elif cfg.fused_batch_norm:
    fused_batch_norm.fuse(net)
  # The same results bit for bit, without mixed precision's saturating cast.
  upsampling.use(net)
  gradient_mode = conv_gradients.mode_for_this_machine(cfg.conv_gradients,
                                                       dtype_policy)
  if gradient_mode == 'matmul' and strategy.num_replicas_in_sync == 1:
    conv_gradients.use(net)
  else:
    gradient_mode = 'native'
    corrected = conv_gradients.correct(net)
    if corrected:
      gradient_mode += (f' ({corrected} strided 1x1 filter gradients as '
                        'matrix products: oneDNN\'s are wrong)')
  print(f'train: computing in {dtype_policy}, convolution gradients '
        f'{gradient_mode}', flush=True)
  embedder = model_lib.embedding_model(net)
  run_embedder = tf.function(
      lambda x: embedder(x, training=False)['embedding'])
  embed_fn = lambda x: run_embedder(x).numpy()
  if start_phase or start_epoch:
    print(f'train: resuming at phase {start_phase}, epoch {start_epoch} '
          f'({tf.train.latest_checkpoint(checkpoint_dir)})', flush=True)

  logs = tensorboard_logging.Monitor(
      os.path.join(cfg.run_dir, artifacts.LOGS_DIR), embedder, net, cfg.data,
      cfg.preprocess, cfg.eval_every, cfg.eval_batch_size,
      pipeline.train_dataset(cfg.data, cfg.preprocess, cfg.inputs,
                             loaded)) if chief else None
  try:
    for index, phase in enumerate(cfg.phases):
      initial = start_epoch if index == start_phase else 0
      if index < start_phase or initial >= phase.epochs:
        continue
      print(f'train: phase {phase.name} (trains {",".join(phase.trains)}; '
            f'lr {phase.lr:g}; epochs {initial}..{phase.epochs})', flush=True)
      with strategy.scope():
        # Changing `trainable` takes effect at compile.
        # A head without a loss would only collect warnings about no
        # gradient.
        model_lib.set_trainable(net, phase.trains,
                                frozen=() if phase.reconstruct else
                                ('reconstruction',))
        # Keras' Adam, each weight updated in one pass (fused_adam.py).
        trainer.compile(fused_adam.FusedAdam(phase.lr),
                        reconstruct=phase.reconstruct)
      saver.attach(trainer)
      if index == start_phase and (start_phase or start_epoch):
        saver.restore(trainer, start_epoch)
      phase_start = sum(p.epochs for p in cfg.phases[:index])
      callbacks = [
          keras.callbacks.LearningRateScheduler(phase.learning_rate),
          Checkpointer(saver, index, phase.epochs, phase_start)]
      if logs:
        logs.start_phase(phase, phase_start)
        callbacks.insert(1, logs)
      # Every epoch of the whole schedule sees new batches, also on resume.
      dataset = distributed_dataset(
          strategy, lambda num_replicas, replicas: pipeline.train_dataset(
              cfg.data, cfg.preprocess, cfg.inputs, loaded,
              start_step=(phase_start + initial) * steps,
              num_replicas=num_replicas, replicas=replicas))
      trainer.fit(dataset, epochs=phase.epochs, initial_epoch=initial,
                  steps_per_epoch=steps, verbose=2 if chief else 0,
                  shuffle=False, callbacks=callbacks)
      if chief and index < len(cfg.phases) - 1:
        # Each stage's accuracy, as in the paper's tables (stage 1 vs 2).
        stage = retrieval.evaluate(
            embed_fn, cfg.data, cfg.preprocess,
            os.path.join(cfg.run_dir, artifacts.EVAL_DIR, phase.name),
            cfg.eval_batch_size,
            title=f'{os.path.basename(cfg.run_dir)} after {phase.name}')
        print(f'train: after {phase.name}: '
              f'{metrics_lib.format_results(stage.metrics)}', flush=True)
  except PEER_ERRORS as e:
    if strategy.num_replicas_in_sync == 1:
      raise
    raise RuntimeError(
        f'{role} lost contact with the other workers '
        f'({type(e).__name__}: {cli.error_message(e).splitlines()[0]}). '
        'Rerun every worker with the same command: training resumes from '
        f'the last checkpoint in {checkpoint_dir}') from None
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)

  # Saved models hold plain Keras layers (same variables, same results).
  fused_batch_norm.unfuse(net)
  conv_gradients.restore(net)
  upsampling.restore(net)
  if dtype_policy != 'float32':
    # Saved and evaluated in float32, as the export serves it: mixed
    # precision keeps float32 variables, so the same weights carry over.
    embedder = model_lib.embedding_model(float32_copy(net, cfg.model))
    run_embedder = tf.function(
        lambda x: embedder(x, training=False)['embedding'])
  fingerprint = checkpoints.fingerprint(net.get_weights())
  print(f'train: {role}: final weights {fingerprint}', flush=True)
  if not chief:
    return {'weights': fingerprint}
  model_path = os.path.join(cfg.run_dir, artifacts.EMBEDDING_MODEL)
  with files.replacing(model_path, '.keras') as tmp:
    embedder.save(tmp)
  final = retrieval.evaluate(embed_fn, cfg.data, cfg.preprocess,
                            os.path.join(cfg.run_dir, artifacts.EVAL_DIR),
                            cfg.eval_batch_size,
                            title=os.path.basename(cfg.run_dir))
  logs.final(final, sum(p.epochs for p in cfg.phases))
  return final.metrics


def float32_copy(net: keras.Model, model_cfg) -> keras.Model:
  """`net`, rebuilt to compute in float32, with its weights."""
  with precision.building_under('float32'):
    copy = model_lib.build_model(dataclasses.replace(model_cfg, init='none'))
  copy.set_weights(net.get_weights())
  return copy


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.data or not FLAGS.run_dir:
    raise app.UsageError('--data and --run_dir are required')
  cfg = config.build(config.from_flags(FLAGS))
  metrics = train(cfg)
  if 'top1' in metrics:     # the chief's; other workers write nothing
    print(f'train: {metrics_lib.format_results(metrics)}; wrote {cfg.run_dir}')


if __name__ == '__main__':
  config.define_flags()
  cli.run(main, 'train', errors=(RuntimeError,))

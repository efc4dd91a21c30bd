r"""Training-step throughput (images/s) of the model on this machine.

  python -m benchmarks.train_step --backbones=resnet50,mobilenet_v2_0.35 \
      --sizes=64,128 --batch=64 --settings=plain,fused,bf16_fused,default

Times full Landmark-Id training steps (all losses, all layers trainable) on
random inputs, after two warm-up steps, under each speed setting: plain
(float32, Keras batch norm), fused (lmid_tf/speed/fused_batch_norm.py), bf16
(mixed bfloat16), combinations joined by '_', and default (what
lmid_tf.train picks on this machine: --precision=auto, fused batch norm).
Prints a table.
"""

import sys
import time
import warnings

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from benchmarks import machine
from lmid_tf import config
from lmid_tf.speed import fused_batch_norm
from lmid_tf.modeling import model as model_lib
from lmid_tf.modeling import objective
from lmid_tf.speed import precision


SETTINGS = ('plain', 'fused', 'bf16', 'bf16_fused', 'default')


def step_rate(backbone: str, size: int, batch: int, landmarks: int = 3,
              steps: int = 10, setting: str = 'plain') -> float:
  """Images per second of Objective.train_step, after warm-up."""
  if setting not in SETTINGS:
    raise ValueError(f'setting {setting!r}: one of {", ".join(SETTINGS)}')
  if setting == 'default':
    defaults = config.Settings()
    dtype_policy = precision.for_this_machine(defaults.precision, backbone)
    fused = defaults.fused_batch_norm
  else:
    dtype_policy = 'mixed_bfloat16' if 'bf16' in setting else 'float32'
    fused = 'fused' in setting
  cfg = config.resolve(config.Settings(
      backbone=backbone, image_size=size, init='none',
      variant='landmark_id' if landmarks else 'baseline',
      schedule=('timed trains=all lr=1e-4 epochs=1 '
                f'reconstruct={int(bool(landmarks))}')),
      num_classes=100, channels=1, num_landmarks=landmarks)
  with precision.building_under(dtype_policy):
    net = model_lib.build_model(cfg.model)
    trainer = objective.Objective(net, 100, cfg.losses)
  if fused:
    fused_batch_norm.fuse(net)
  model_lib.set_trainable(net, ['all'])
  trainer.compile(keras.optimizers.Adam(1e-4), reconstruct=bool(landmarks))
  rng = np.random.default_rng(0)
  inputs = {'image': rng.normal(size=(batch, size, size, 1)).astype('float32')}
  targets = {'label': np.repeat(np.arange(batch // 4), 4).astype('int32')}
  if landmarks:
    inputs['heatmaps'] = rng.random((batch, size, size, landmarks),
                                    dtype=np.float32)
    side = cfg.preprocess.reconstruction_size
    targets['heatmaps'] = rng.random((batch, side, side, landmarks),
                                     dtype=np.float32)
  data = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
  timer = _StepTimer(warmup=2)
  trainer.fit(data, steps_per_epoch=2 + steps, epochs=1, verbose=0,
              callbacks=[timer])
  return batch * steps / timer.seconds


class _StepTimer(keras.callbacks.Callback):
  """Wall time of the batches after `warmup` (tracing excluded)."""

  def __init__(self, warmup):
    super().__init__()
    self.warmup, self.start, self.seconds = warmup, None, None

  def on_train_batch_end(self, batch, logs=None):
    if batch == self.warmup - 1:
      self.start = time.perf_counter()
    elif self.start is not None:
      self.seconds = time.perf_counter() - self.start

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list('backbones', ['resnet50', 'mobilenet_v2_0.35'],
                    'Backbones to time.')
  flags.DEFINE_list('sizes', ['64', '128'], 'Input sides.')
  flags.DEFINE_integer('batch', 64, 'Batch size.')
  flags.DEFINE_integer('steps', 10, 'Timed steps.')
  flags.DEFINE_list('settings', ['plain'], 'Speed settings: '
                    + ', '.join(SETTINGS) + '.')


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  print('command: python -m benchmarks.train_step ' + ' '.join(sys.argv[1:]))
  print(machine.describe())
  print(f'{"backbone":20} {"size":>5} {"batch":>6} {"setting":>11} '
        f'{"img/s":>8}')
  for backbone in FLAGS.backbones:
    for size in FLAGS.sizes:
      for setting in FLAGS.settings:
        rate = step_rate(backbone, int(size), FLAGS.batch, steps=FLAGS.steps,
                         setting=setting)
        print(f'{backbone:20} {size:>5} {FLAGS.batch:>6} {setting:>11} '
              f'{rate:8.1f}', flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)

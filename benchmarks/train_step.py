r"""Training-step throughput (images/s) of the model on this machine.

  python -m benchmarks.train_step --backbones=resnet50,mobilenet_v2_0.35 \
      --sizes=64,128 --batch=64 --settings=plain,fused,bf16_fused,default

Times full Landmark-Id training steps (all losses, all layers trainable) on
random inputs, after two warm-up steps, under each speed setting: plain
(float32, Keras batch norm), fused (lmid_tf/speed/fused_batch_norm.py), bf16
(mixed bfloat16), combinations joined by '_', and default (what
lmid_tf.train picks on this machine: --precision=auto, fused batch norm,
--conv_gradients=auto, fused Adam and the upsampling of
lmid_tf/speed/upsampling.py).
Prints a table.
"""

import sys
import time
import warnings

from absl import app
from absl import flags

from benchmarks import machine
from benchmarks import tf_step
from lmid_tf import config
from lmid_tf.speed import conv_gradients
from lmid_tf.speed import precision


SETTINGS = ('plain', 'fused', 'bf16', 'bf16_fused', 'default')


def resolved_setting(setting: str, backbone: str) -> str:
  """A SETTINGS name -> tf_step tokens; 'default' is what lmid_tf.train picks
  on this machine (--precision=auto, --fused_batch_norm,
  --conv_gradients=auto, fused Adam, upsampling.use)."""
  if setting not in SETTINGS:
    raise ValueError(f'setting {setting!r}: one of {", ".join(SETTINGS)}')
  if setting != 'default':
    return setting
  defaults = config.Settings()
  policy = precision.for_this_machine(defaults.precision, backbone)
  tokens = ['bf16'] if policy == 'mixed_bfloat16' else ['plain']
  if defaults.fused_batch_norm:
    tokens.append('fused')
  if conv_gradients.mode_for_this_machine(defaults.conv_gradients,
                                          policy) == 'matmul':
    tokens.append('matmul')
  return '_'.join(tokens + ['fusedadam', 'upsample'])


def step_rate(backbone: str, size: int, batch: int, landmarks: int = 3,
              steps: int = 10, setting: str = 'plain') -> float:
  """Images per second of Objective's training step, after two warm-up
  steps (tracing excluded)."""
  step = tf_step.step_function(
      backbone, size, batch, channels=1, landmarks=landmarks,
      reconstruct=bool(landmarks),
      **tf_step.options(resolved_setting(setting, backbone)))
  for _ in range(2):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return batch * steps / (time.perf_counter() - start)


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

"""One line saying what machine a benchmark ran on (speeds depend on it)."""

import os
import platform
import time

from lmid_tf.speed import precision

# The instruction sets that change TensorFlow's CPU speed the most.
_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile',
          'amx_bf16')


def cpu_flags() -> list:
  present = precision.cpu_flags()
  return [flag for flag in _FLAGS if flag in present]


def describe() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(line.split(':', 1)[1].strip() for line in f
                   if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  import tensorflow as tf
  return (f'machine: {model}; {os.cpu_count()} cores; CPU flags '
          f'{" ".join(cpu_flags()) or "(unknown)"}; tensorflow {tf.__version__}'
          f' (oneDNN {onednn_state()})')


def onednn_state() -> str:
  """'on' or 'off': whether this TensorFlow runs its oneDNN kernels (it
  decides once, at import, from the CPU and TF_ENABLE_ONEDNN_OPTS, which
  lmid_tf/__init__.py sets)."""
  from lmid_tf.speed import conv_gradients
  return 'on' if conv_gradients.onednn_enabled() else 'off'


def print_footer(command: str) -> None:
  """The lines every benchmark's table ends with: the command that made
  it, the date and the machine."""
  print(f'command: {command}')
  print(f'date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}')
  print(describe())

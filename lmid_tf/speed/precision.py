"""The precision a training run computes in (--precision), chosen from the
hardware unless set.

bfloat16 halves the arithmetic cost of a convolution only where the CPU has
bf16 dot-product instructions (avx512_bf16, AMX); elsewhere oneDNN emulates
it, slower than float32. Depthwise convolutions (MobileNet) are memory-bound
and gain nothing from it even there. Full training steps with fused batch
norm on 2 Zen 4 cores with avx512_bf16 (benchmarks/train_step.py,
docs/RESULTS.md, "Speed"), float32 -> mixed bfloat16:

  small_cnn, 64 px:          77 -> 113 img/s
  ResNet50, 128 px:          19 ->  32 img/s
  MobileNetV2-0.35, 64 px:  127 -> 124 img/s (no gain)

So 'auto' trains in mixed bfloat16 on such a CPU for the backbones measured
faster, and in float32 otherwise. A GPU's float16 was not measured here: on
a GPU 'auto' keeps float32 and --precision=mixed opts in.
"""

import contextlib

import keras
import tensorflow as tf

from lmid_tf.modeling import model

PRECISIONS = ('auto', 'float32', 'mixed')
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')
# Backbones whose training step measured faster in bfloat16 (ResNet101 is
# ResNet50's blocks, more of them).
BF16_FASTER_BACKBONES = ('small_cnn', 'resnet50', 'resnet101')


def cpu_flags() -> set:
  """The instruction-set flags of this machine's CPU (empty if unknown)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return set()


def policy(precision: str, backbone: str, gpu: bool, flags: set) -> str:
  """The Keras dtype policy for a run: 'float32', 'mixed_bfloat16' or
  'mixed_float16'."""
  if precision not in PRECISIONS:
    raise ValueError(f'--precision={precision}: one of '
                     f'{", ".join(PRECISIONS)}')
  if precision == 'float32':
    return 'float32'
  if precision == 'mixed':
    # float16 needs a GPU to be fast; bfloat16 is what CPUs accelerate.
    return 'mixed_float16' if gpu else 'mixed_bfloat16'
  if (not gpu and backbone in BF16_FASTER_BACKBONES
      and flags & set(BF16_CPU_FLAGS)):
    return 'mixed_bfloat16'
  return 'float32'


def for_this_machine(precision: str, backbone: str) -> str:
  """policy() for the GPU and CPU this process runs on."""
  return policy(precision, backbone,
                gpu=bool(tf.config.list_physical_devices('GPU')),
                flags=cpu_flags())


@contextlib.contextmanager
def building_under(dtype_policy: str):
  """Builds layers under `dtype_policy` (layers keep the policy they were
  built with), restoring the global policy afterwards."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(dtype_policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


# Precisions an export can compute in (serving.export --precision).
SERVING_PRECISIONS = ('float32', 'bfloat16')


def compute_backbone_in(net: keras.Model, serving_precision: str) -> None:
  """Makes the layers of `net`'s backbone (nested models included), where
  nearly all of the arithmetic is, compute in `serving_precision`, in place;
  variables stay float32 and the heads (embedding, normalisation) float32,
  so the outputs keep their dtype. For inference copies only."""
  if serving_precision not in SERVING_PRECISIONS:
    raise ValueError(f'--precision={serving_precision}: one of '
                     f'{", ".join(SERVING_PRECISIONS)}')
  if serving_precision == 'float32':
    return
  for layer in model.leaf_layers(net.get_layer('backbone')):
    if not isinstance(layer, keras.layers.InputLayer):
      layer.dtype_policy = 'mixed_bfloat16'

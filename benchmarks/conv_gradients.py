r"""Each convolution's filter gradient, TensorFlow's kernel against the matrix
product of lmid_tf/speed/conv_gradients.py, layer by layer.

  python -m benchmarks.conv_gradients --backbone=resnet50 --size=128 --batch=32

For every Conv2D of the backbone at the benchmark's input shape, times
dL/dW both ways on random inputs in --dtype (bfloat16 where the CPU has it)
and prints GFLOP/s, which one MatmulConv2D takes (its thresholds,
POINTWISE_MAX_POSITIONS and PATCHES_MAX_POSITIONS), and the totals: the
evidence for those thresholds on this CPU.
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
from benchmarks import tf_step
from lmid_tf.modeling import model as model_lib
from lmid_tf.speed import conv_gradients

FLAGS = flags.FLAGS


def conv_shapes(backbone: str, size: int, channels: int):
  """(name, input [H, W, C], kernel [kh, kw, C, K], stride, padding) of each
  Conv2D of the backbone."""
  _, net = tf_step.build_network(backbone, size, channels, 3)
  for layer in model_lib.leaf_layers(net.get_layer('backbone')):
    if type(layer) is keras.layers.Conv2D:
      yield (layer.name, tuple(layer.input.shape[1:]),
             tuple(layer.kernel.shape), layer.strides[0],
             layer.padding.upper())


def _milliseconds(run, repeats: int) -> float:
  run()
  start = time.perf_counter()
  for _ in range(repeats):
    run()
  return 1000 * (time.perf_counter() - start) / repeats


def time_layer(batch, shape, kernel, strides, padding, dtype, repeats):
  """(native ms, matmul ms, GFLOP) of one filter gradient."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(batch,) + shape), dtype)
  out = -(-shape[0] // strides) if padding == 'SAME' else (
      (shape[0] - kernel[0]) // strides + 1)
  dy = tf.constant(rng.normal(size=(batch, out, out, kernel[3])), dtype)
  native = tf.function(lambda: tf.compat.v1.nn.conv2d_backprop_filter(
      x, kernel, dy, [1, strides, strides, 1], padding))
  product = tf.function(lambda: conv_gradients.filter_gradient(
      x, dy, kernel, strides, padding))
  gflop = 2 * batch * out * out * np.prod(kernel) / 1e9
  return (_milliseconds(native, repeats), _milliseconds(product, repeats),
          gflop, batch * out * out)


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  print('command: python -m benchmarks.conv_gradients ' + ' '.join(
      sys.argv[1:]))
  print(machine.describe())
  tf.get_logger().setLevel('ERROR')
  dtype = tf.as_dtype(FLAGS.dtype)
  print(f'| layer | input | kernel | stride | N = B·H·W out | native ms | '
        f'GFLOP/s | matmul ms | GFLOP/s | MatmulConv2D takes |')
  print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
  totals = {'native': 0.0, 'matmul': 0.0, 'chosen': 0.0, 'best': 0.0}
  for name, shape, kernel, strides, padding in conv_shapes(
      FLAGS.backbone, FLAGS.size, FLAGS.channels):
    native, product, gflop, positions = time_layer(
        FLAGS.batch, shape, kernel, strides, padding, dtype, FLAGS.repeats)
    takes_matmul = conv_gradients.matmul_filter_gradient(kernel, strides,
                                                         positions)
    totals['native'] += native
    totals['matmul'] += product
    totals['chosen'] += product if takes_matmul else native
    totals['best'] += min(native, product)
    print(f'| {name} | {"x".join(map(str, shape))} | '
          f'{"x".join(map(str, kernel))} | {strides} | {positions} | '
          f'{native:.2f} | {gflop / native * 1e3:.0f} | {product:.2f} | '
          f'{gflop / product * 1e3:.0f} | '
          f'{"matmul" if takes_matmul else "native"} |', flush=True)
  print(f'\nfilter gradients of one step, ms: all native {totals["native"]:.1f}; '
        f'all matmul {totals["matmul"]:.1f}; as MatmulConv2D chooses '
        f'{totals["chosen"]:.1f}; the faster of the two per layer '
        f'{totals["best"]:.1f}')


if __name__ == '__main__':
  tf_step.define_shape_flags()
  flags.DEFINE_string('dtype', 'bfloat16', 'bfloat16 or float32.')
  flags.DEFINE_integer('repeats', 10, 'Timed calls per layer and way.')
  app.run(main)

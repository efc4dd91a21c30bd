r"""Each convolution's filter gradient, TensorFlow's kernel against the matrix
product of lmid_tf/speed/conv_gradients.py, layer by layer.

  python -m benchmarks.conv_gradients --backbone=resnet50 --size=128 --batch=32

For every Conv2D of the backbone at the benchmark's input shape, times
dL/dW both ways on random inputs in --dtype (bfloat16 where the CPU has it)
and prints GFLOP/s, which one MatmulConv2D takes (every 1×1 filter, and
larger ones up to PATCHES_MAX_POSITIONS), and the totals: the evidence for
that choice on this CPU.

Then each 1×1 convolution at a stride above 1, forward and both gradients:
TensorFlow's strided kernels against conv_gradients.conv2d (a matrix
product of the subsampled input), and the subsampling alone: TensorFlow's
StridedSlice x[:, ::s, ::s, :] against conv_gradients.subsample.
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


def time_strided_pointwise(batch, shape, kernel, strides, padding, dtype,
                           repeats):
  """(TensorFlow's ms, conv_gradients.conv2d's ms, StridedSlice ms,
  subsample ms) of one strided 1×1 convolution: forward and both
  gradients, then the subsampling of its input alone."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(batch,) + shape), dtype)
  w = tf.constant(rng.normal(size=kernel) / np.sqrt(kernel[2]), dtype)
  out = -(-shape[0] // strides)
  dy = tf.constant(rng.normal(size=(batch, out, out, kernel[3])), dtype)

  def both_gradients(convolve):
    @tf.function
    def run():
      with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = convolve(x, w)
      return tape.gradient(y, [x, w], output_gradients=dy)
    return run

  native = both_gradients(lambda x, w: tf.nn.conv2d(x, w, strides, padding))
  product = both_gradients(lambda x, w: conv_gradients.conv2d(
      x, w, strides, padding, matmul_filter=True))
  sliced = tf.function(lambda: x[:, ::strides, ::strides, :])
  picked = tf.function(lambda: conv_gradients.subsample(x, strides))
  return tuple(_milliseconds(f, repeats)
               for f in (native, product, sliced, picked))


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
  print('\n| strided 1×1 layer | input | kernel | stride | TensorFlow ms '
        '(forward + both gradients) | conv_gradients.conv2d ms | '
        'StridedSlice ms | subsample ms |')
  print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |')
  sums = np.zeros(4)
  for name, shape, kernel, strides, padding in conv_shapes(
      FLAGS.backbone, FLAGS.size, FLAGS.channels):
    if kernel[:2] != (1, 1) or strides == 1:
      continue
    times = time_strided_pointwise(FLAGS.batch, shape, kernel, strides,
                                   padding, dtype, FLAGS.repeats)
    sums += times
    print(f'| {name} | {"x".join(map(str, shape))} | '
          f'{"x".join(map(str, kernel))} | {strides} | ' +
          ' | '.join(f'{t:.2f}' for t in times) + ' |', flush=True)
  print('| all | | | | ' + ' | '.join(f'{t:.2f}' for t in sums) + ' |')


if __name__ == '__main__':
  tf_step.define_shape_flags()
  flags.DEFINE_string('dtype', 'bfloat16', 'bfloat16 or float32.')
  flags.DEFINE_integer('repeats', 10, 'Timed calls per layer and way.')
  app.run(main)

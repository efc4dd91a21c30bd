r"""Batch norm + ReLU gradients: TensorFlow's two CPU kernels against one
XLA-compiled fusion, at each batch norm's shape in the backbone.

  python -m benchmarks.bn_relu_gradient --backbone=resnet50 --size=128 --batch=32

TensorFlow's CPU build computes the gradient of ReLU(BatchNorm(x)) as
ReluGrad, then FusedBatchNormGradV3: two passes over the activations.
Grappler fuses the pair only on a GPU. The one way to fuse them on a CPU
without a C++ kernel is XLA (`tf.function(jit_compile=True)`): this times
that fusion, forward included on both sides (batch norm in training mode,
then ReLU), in --dtype, and checks that it computes the same dx. Every
batch norm of the backbone is timed as if a ReLU followed it (in ResNet50
36 of 53 are; the others feed a residual add first).
"""

import collections
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

FLAGS = flags.FLAGS
EPSILON = 1e-3


def batch_norm_shapes(backbone: str, size: int, channels: int) -> dict:
  """{output shape [H, W, C]: how many batch norms have it}."""
  _, net = tf_step.build_network(backbone, size, channels, 3)
  return collections.Counter(
      tuple(layer.output.shape[1:])
      for layer in model_lib.leaf_layers(net.get_layer('backbone'))
      if isinstance(layer, keras.layers.BatchNormalization))


def _forward(x, gamma, beta):
  y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
      x, gamma, beta, epsilon=EPSILON, is_training=True)
  return tf.nn.relu(y), mean, variance


@tf.function
def tensorflow_gradient(x, gamma, beta, dz):
  """dx, dgamma, dbeta by TensorFlow's own gradients."""
  with tf.GradientTape() as tape:
    tape.watch([x, gamma, beta])
    z, _, _ = _forward(x, gamma, beta)
  return tape.gradient(z, [x, gamma, beta], output_gradients=dz)


@tf.function(jit_compile=True)
def _fused_backward(x, z, dz, gamma, mean, variance):
  # The batch-norm gradient with the ReLU mask applied on the fly: what a
  # fused kernel computes, in float32 arithmetic on --dtype tensors.
  masked = tf.where(z > 0, tf.cast(dz, tf.float32), 0.0)
  inverse = tf.math.rsqrt(variance + EPSILON)
  normalised = (tf.cast(x, tf.float32) - mean) * inverse
  count = tf.cast(tf.size(masked) // tf.shape(masked)[-1], tf.float32)
  dbeta = tf.reduce_sum(masked, [0, 1, 2])
  dgamma = tf.reduce_sum(masked * normalised, [0, 1, 2])
  dx = gamma * inverse / count * (count * masked - dbeta
                                  - normalised * dgamma)
  return tf.cast(dx, x.dtype), dgamma, dbeta


@tf.function
def xla_gradient(x, gamma, beta, dz):
  z, mean, variance = _forward(x, gamma, beta)
  # FusedBatchNormV3 returns the unbiased variance; normalising used the
  # biased one.
  count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
  return _fused_backward(x, z, dz, gamma, mean,
                         variance * (count - 1.0) / count)


def _milliseconds(run, repeats: int) -> float:
  run()
  best = float('inf')
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(repeats):
      outputs = run()
    outputs[0].numpy()
    best = min(best, (time.perf_counter() - start) / repeats)
  return 1000 * best


def time_shape(batch: int, shape: tuple, dtype, repeats: int) -> tuple:
  """(TensorFlow ms, XLA ms, XLA's largest dx error relative to the
  largest |dx|)."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(batch,) + shape), dtype)
  dz = tf.constant(rng.normal(size=(batch,) + shape), dtype)
  gamma = tf.constant(rng.uniform(0.5, 1.5, shape[-1]), tf.float32)
  beta = tf.constant(rng.normal(size=shape[-1]), tf.float32)
  reference = tensorflow_gradient(x, gamma, beta, dz)[0]
  fused = xla_gradient(x, gamma, beta, dz)[0]
  reference = tf.cast(reference, tf.float32)
  error = float(tf.reduce_max(tf.abs(tf.cast(fused, tf.float32) - reference))
                / tf.reduce_max(tf.abs(reference)))
  return (_milliseconds(lambda: tensorflow_gradient(x, gamma, beta, dz),
                        repeats),
          _milliseconds(lambda: xla_gradient(x, gamma, beta, dz), repeats),
          error)


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  tf.get_logger().setLevel('ERROR')
  dtype = tf.as_dtype(FLAGS.dtype)
  print('| batch norm output | count | TensorFlow ms | XLA fused ms | '
        'XLA / TensorFlow | dx error |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  totals = [0.0, 0.0]
  for shape, count in sorted(batch_norm_shapes(
      FLAGS.backbone, FLAGS.size, FLAGS.channels).items()):
    native, fused, error = time_shape(FLAGS.batch, shape, dtype,
                                      FLAGS.repeats)
    totals[0] += count * native
    totals[1] += count * fused
    print(f'| {FLAGS.batch}x{"x".join(map(str, shape))} | {count} | '
          f'{native:.2f} | {fused:.2f} | {fused / native:.2f} | '
          f'{error:.1e} |', flush=True)
  print(f'| all, per step | | {totals[0]:.1f} | {totals[1]:.1f} | '
        f'{totals[1] / totals[0]:.2f} | |')
  print()
  machine.print_footer('python -m benchmarks.bn_relu_gradient '
                       + ' '.join(sys.argv[1:]))


if __name__ == '__main__':
  tf_step.define_shape_flags()
  flags.DEFINE_string('dtype', 'bfloat16', 'bfloat16 or float32.')
  flags.DEFINE_integer('repeats', 10, 'Timed calls per shape and way.')
  app.run(main)

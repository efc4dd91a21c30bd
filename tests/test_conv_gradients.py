"""lmid_tf/speed/conv_gradients.py: the matrix-product convolution gradients
against TensorFlow's own, and the swapped network against the plain one."""

import collections
import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from lmid_tf.speed import conv_gradients
from lmid_tf.speed import precision

# bf16 keeps 8 significant bits: each product rounds its output once, so
# two orders of summation differ by a few units of the last place.
BF16_TOLERANCE = 2e-2     # of the largest magnitude of the result


def _random(shape, seed):
  return tf.constant(np.random.default_rng(seed).normal(size=shape),
                     tf.float32)


CASES = [  # (input side, channels, kernel, filters, strides, padding)
    (8, 5, 1, 6, 1, 'SAME'),
    (8, 5, 1, 6, 2, 'SAME'),
    (7, 5, 1, 6, 2, 'VALID'),
    (8, 4, 3, 6, 1, 'SAME'),
    (9, 4, 3, 6, 2, 'SAME'),
    (8, 4, 3, 6, 1, 'VALID'),
    (12, 3, 7, 4, 2, 'SAME'),
]


@pytest.mark.parametrize('side,channels,kernel,filters,strides,padding',
                         CASES)
def test_patches_and_filter_gradient_equal_tensorflow(
    side, channels, kernel, filters, strides, padding):
  x = _random([2, side, side, channels], 0)
  expected = tf.image.extract_patches(
      x, [1, kernel, kernel, 1], [1, strides, strides, 1], [1, 1, 1, 1],
      padding)
  got = conv_gradients.patches(x, kernel, kernel, strides, padding)
  np.testing.assert_array_equal(got.numpy(), expected.numpy())
  w = _random([kernel, kernel, channels, filters], 1)
  dy = _random(tf.nn.conv2d(x, w, strides, padding).shape, 2)
  # float64: TensorFlow's float32 kernel is oneDNN's, wrong for a strided
  # 1×1 filter (conv_gradients.wrong_under_onednn).
  expected = tf.compat.v1.nn.conv2d_backprop_filter(
      tf.cast(x, tf.float64), w.shape, tf.cast(dy, tf.float64),
      [1, strides, strides, 1], padding)
  got = conv_gradients.filter_gradient(x, dy, w.shape, strides, padding)
  np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5,
                             atol=1e-4)


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
@pytest.mark.parametrize('rows,cols,strides', [(8, 8, 2), (7, 9, 2),
                                               (9, 8, 3), (5, 5, 1),
                                               (1, 1, 2), (2, 3, 3)])
def test_subsample_and_its_gradient_equal_a_strided_slice(rows, cols, strides,
                                                          dtype):
  x = tf.cast(_random([2, rows, cols, 3], 12), dtype)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    expected = x[:, ::strides, ::strides, :]
    got = conv_gradients.subsample(x, strides)
    # Weights that differ by position, so the gradient tells them apart.
    weights = tf.cast(_random(expected.shape, 13), dtype)
    expected_loss = tf.reduce_sum(expected * weights)
    got_loss = tf.reduce_sum(got * weights)
  np.testing.assert_array_equal(tf.cast(got, tf.float32).numpy(),
                                tf.cast(expected, tf.float32).numpy())
  np.testing.assert_array_equal(
      tf.cast(tape.gradient(got_loss, x), tf.float32).numpy(),
      tf.cast(tape.gradient(expected_loss, x), tf.float32).numpy())


def test_strided_pointwise_convolution_has_no_strided_kernel_or_slice():
  # Forward and both gradients are matrix products of the subsampled input:
  # no Conv2D kernel and no StridedSlice with a step (module docstring).
  x = _random([2, 8, 8, 4], 14)
  w = _random([1, 1, 4, 6], 15)

  @tf.function
  def step(x, w):
    with tf.GradientTape() as tape:
      tape.watch([x, w])
      y = conv_gradients.conv2d(x, w, 2, 'SAME', True)
    return tape.gradient(y, [x, w], output_gradients=tf.ones_like(y))

  graph = step.get_concrete_function(x, w).graph
  ops = [op for function in [graph] + [
      f.graph for f in graph._functions.values() if hasattr(f, 'graph')]
         for op in function.get_operations()]
  types = {op.type for op in ops}
  assert 'MatMul' in types
  assert not types & {'Conv2D', 'Conv2DBackpropInput',
                      'Conv2DBackpropFilter', 'StridedSliceGrad'}
  for op in ops:
    if op.type == 'StridedSlice':
      steps = tf.get_static_value(op.inputs[3])
      assert steps is None or set(steps.tolist()) == {1}, op.name


@pytest.mark.parametrize('strides', [1, 2])
def test_pointwise_convolution_traces_with_an_unknown_batch(strides):
  # A step traced for any batch size (Keras' symbolic builds, a dataset
  # without drop_remainder): the matrix products' reshapes must not need it.
  w = _random([1, 1, 4, 6], 16)

  @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 4])])
  def gradients(x):
    with tf.GradientTape() as tape:
      tape.watch([x, w])
      y = conv_gradients.conv2d(x, w, strides, 'SAME', True)
      loss = tf.reduce_sum(y * y)
    return [y] + tape.gradient(loss, [x, w])

  x = _random([3, 8, 8, 4], 17)
  # float64: TensorFlow's float32 strided 1×1 filter gradient can be wrong
  # (conv_gradients.wrong_under_onednn).
  wide = [tf.cast(x, tf.float64), tf.cast(w, tf.float64)]
  with tf.GradientTape() as tape:
    tape.watch(wide)
    y = tf.nn.conv2d(*wide, strides, 'SAME')
    loss = tf.reduce_sum(y * y)
  expected = [y] + tape.gradient(loss, wide)
  for got, want in zip(gradients(x), expected):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize('dtype,tolerance', [(tf.float32, 1e-5),
                                             (tf.bfloat16, BF16_TOLERANCE)])
@pytest.mark.parametrize('side,channels,kernel,filters,strides,padding',
                         CASES)
@pytest.mark.parametrize('subsample_pointwise', [True, False])
def test_convolution_and_both_gradients_equal_tensorflow(
    side, channels, kernel, filters, strides, padding, dtype, tolerance,
    subsample_pointwise):
  # subsample_pointwise=False is correct()'s path: TensorFlow's strided
  # kernels for a strided 1×1, except the filter gradient.
  # The float32 reference is TensorFlow's in float64, which never runs
  # oneDNN: in float32 its strided 1×1 filter gradient is wrong
  # (conv_gradients.wrong_under_onednn). bf16 is compared with bf16.
  wide = tf.float64 if dtype == tf.float32 else dtype
  x = tf.cast(_random([2, side, side, channels], 3), dtype)
  w = tf.cast(_random([kernel, kernel, channels, filters], 4), dtype)
  weights = _random([2, -(-side // strides), -(-side // strides), filters], 5)
  native_wrong = (dtype == tf.float32 and conv_gradients.needs_correction()
                  and conv_gradients.wrong_under_onednn(w.shape, strides))
  results = []
  for matmul in (None, True) + (() if native_wrong else (False,)):
    inputs = [tf.cast(x, wide), tf.cast(w, wide)] if (
        matmul is None) else [x, w]
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      y = (tf.nn.conv2d(*inputs, strides, padding) if matmul is None else
           conv_gradients.conv2d(*inputs, strides, padding, matmul,
                                 subsample_pointwise))
      # A weighting that is not all ones, so dy varies by position.
      if padding == 'VALID':
        weights = weights[:, :y.shape[1], :y.shape[2]]
      total = tf.float64 if y.dtype == tf.float64 else tf.float32
      loss = tf.reduce_sum(tf.cast(y, total) * tf.cast(weights, total))
    results.append([y] + tape.gradient(loss, inputs))
  for got in results[1:]:
    for expected, value in zip(results[0], got):
      expected = tf.cast(expected, tf.float32).numpy()
      value = tf.cast(value, tf.float32).numpy()
      assert value.shape == expected.shape
      assert np.abs(value - expected).max() <= (
          tolerance * np.abs(expected).max()), (
              np.abs(value - expected).max(), np.abs(expected).max())


def _net(policy='float32'):
  """A ResNet-like piece: 1×1, 3×3 and strided 1×1 convolutions with
  biases before batch norms, a 3×3 one without, and a biased output conv
  with no batch norm."""
  with precision.building_under(policy):
    inputs = keras.Input((16, 16, 4), batch_size=4)
    x = keras.layers.Conv2D(8, 1, name='a')(inputs)
    x = keras.layers.BatchNormalization(name='a_bn')(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding='same', name='b')(x)
    x = keras.layers.BatchNormalization(name='b_bn')(x)
    x = keras.layers.Conv2D(16, 1, strides=2, name='c')(x)
    x = keras.layers.BatchNormalization(name='c_bn')(x)
    x = keras.layers.Conv2D(16, 3, padding='same', use_bias=False,
                            name='d')(x)
    x = keras.layers.BatchNormalization(name='d_bn')(x)
    x = keras.layers.Conv2D(2, 1, name='out', dtype='float32')(x)
    net = keras.Model(inputs, x)
  # Every weight from one seed: with Keras' unseeded initial kernels the
  # bf16 roundings below changed from run to run, and so did the margins.
  rng = np.random.default_rng(7)
  for layer in net.layers:
    if isinstance(layer, keras.layers.Conv2D):
      fan_in = np.prod(layer.kernel.shape[:-1])
      layer.kernel.assign(rng.normal(size=layer.kernel.shape) / np.sqrt(fan_in))
    if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
      layer.bias.assign(rng.normal(size=layer.bias.shape))
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
      layer.moving_variance.assign(
          rng.uniform(0.5, 2, size=layer.moving_variance.shape))
  return net


def _train_step(net, x):
  with tf.GradientTape() as tape:
    y = net(x, training=True)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * _random(y.shape, 8))
  grads = tape.gradient(loss, net.trainable_variables)
  return y, {v.path: g for v, g in zip(net.trainable_variables, grads)}


@pytest.mark.parametrize('policy,tolerance', [('float32', 1e-5),
                                              ('mixed_bfloat16',
                                               BF16_TOLERANCE)])
def test_swapped_network_trains_and_infers_as_the_plain_one(
    policy, tolerance, tmp_path):
  if policy != 'float32' and not (set(precision.BF16_CPU_FLAGS)
                                  & set(precision.cpu_flags())):
    # Without bf16 instructions both ways are emulated bf16 (Eigen), which
    # round differently enough to miss the tolerance (b_bn's beta off by
    # 0.16 on an AVX2 CPU, depending on the unseeded kernels); lmid-tf
    # never trains in bf16 there, nor takes the matmul path.
    pytest.skip('this CPU has no bf16 instructions (bf16 would be emulated)')
  x = _random([4, 16, 16, 4], 9)
  plain, swapped = _net(policy), _net(policy)
  swapped.set_weights(plain.get_weights())
  # The plain step as lmid-tf trains it: 'c', a strided 1×1, takes the
  # corrected filter gradient where oneDNN's is wrong.
  conv_gradients.correct(plain)
  inference = plain(x, training=False).numpy()
  y, grads = _train_step(plain, x)

  # The three convs with biases before batch norms drop them; 'out' keeps
  # its own (no batch norm after it).
  assert conv_gradients.use(swapped) == 5
  dropped = [l.name for l in swapped.layers
             if getattr(l, '_bias_in_batch_norm', False)]
  assert dropped == ['a', 'b', 'c']
  assert all(not v.path.endswith(('a/bias', 'b/bias', 'c/bias'))
             for v in swapped.trainable_variables)
  np.testing.assert_allclose(swapped(x, training=False).numpy(), inference,
                             rtol=10 * tolerance, atol=10 * tolerance)
  y_swapped, grads_swapped = _train_step(swapped, x)
  np.testing.assert_allclose(
      tf.cast(y_swapped, tf.float32).numpy(),
      tf.cast(y, tf.float32).numpy(), atol=tolerance * 10)
  assert set(grads) - set(grads_swapped) == {'a/bias', 'b/bias', 'c/bias'}
  # A gradient that is itself rounding noise (b_bn's beta: c_bn subtracts
  # it again) is compared on the scale of the network's gradients.
  scale = max(np.abs(g.numpy()).max() for g in grads.values())
  for path, grad in grads_swapped.items():
    expected = grads[path].numpy()
    assert np.abs(grad.numpy() - expected).max() <= 10 * tolerance * max(
        np.abs(expected).max(), 1e-2 * scale), path
  # The biases' gradients there were rounding noise: a batch norm in
  # training mode subtracts them again (in bf16 the noise of a sum of 1,024
  # rounded terms is a few % of the scale).
  for name in ('a', 'b', 'c'):
    assert np.abs(grads[f'{name}/bias'].numpy()).max() < (
        1e-4 if policy == 'float32' else 0.1) * scale

  # Trainable flags set later (schedule phases) keep the dropped biases out.
  for layer in swapped.layers:
    layer.trainable = True
  assert len(swapped.trainable_variables) == len(plain.trainable_variables) - 3

  conv_gradients.restore(swapped)
  assert all(type(l) is keras.layers.Conv2D for l in swapped.layers
             if isinstance(l, keras.layers.Conv2D))
  assert all(l.use_bias for l in swapped.layers if l.name in 'abc')
  path = str(tmp_path / 'restored.keras')
  swapped.save(path)
  loaded = keras.models.load_model(path)
  # Inference is the same function: each bias went into its moving mean.
  # (The moving statistics moved in the training step: compare the loaded
  # copy with the restored net, and the restored net's untouched layers.)
  np.testing.assert_allclose(loaded(x, training=False).numpy(),
                             swapped(x, training=False).numpy(),
                             rtol=1e-6, atol=1e-6)


def _op_types(net, x) -> collections.Counter:
  """Op types of one traced training step of `net` (gradients included)."""
  step = tf.function(lambda x: _train_step(net, x))
  graph = step.get_concrete_function(x).graph
  return collections.Counter(op.type for op in graph.get_operations())


@pytest.mark.parametrize('subsample_pointwise', [True, False])
def test_swapped_network_computes_pointwise_layers_as_matrix_products(
    subsample_pointwise):
  # _net: 1×1 'a' and 'out', strided 1×1 'c', 3×3 'b' and 'd'. Swapped,
  # only the 3×3 ones keep convolution kernels (forward, input gradient;
  # their filter gradients are matrix products at these sizes), unless the
  # strided 1×1 keeps TensorFlow's strided kernels.
  x = _random([4, 16, 16, 4], 18)
  net = _net()
  assert _op_types(net, x)['Conv2D'] == 5
  conv_gradients.use(net, subsample_pointwise=subsample_pointwise)
  types = _op_types(net, x)
  strided_kernels = 0 if subsample_pointwise else 1
  assert types['Conv2D'] == 2 + strided_kernels
  assert types['Conv2DBackpropInput'] == 2 + strided_kernels
  assert types['Conv2DBackpropFilter'] == 0
  # Three per 1×1 layer (a, out, and c unless strided kernels take two),
  # one per 3×3 filter gradient.
  assert types['MatMul'] == 3 * 3 - 2 * strided_kernels + 2


def test_restored_network_infers_as_before_the_swap():
  x = _random([4, 16, 16, 4], 10)
  net = _net()
  before = net(x, training=False).numpy()
  conv_gradients.use(net)
  conv_gradients.restore(net)
  assert [float(np.abs(l.bias.numpy()).max()) for l in net.layers
          if l.name in ('a', 'b', 'c')] == [0.0, 0.0, 0.0]
  np.testing.assert_allclose(net(x, training=False).numpy(), before,
                             rtol=1e-5, atol=1e-5)


def test_mode_follows_the_cpu_and_precision():
  amx = {'avx512_bf16', 'amx_bf16', 'amx_tile'}
  mode = conv_gradients.mode_for_this_machine
  assert mode('auto', 'mixed_bfloat16', amx) == 'matmul'
  assert mode('auto', 'float32', amx) == 'native'
  # AMD Zen 4: bf16 instructions without AMX (measured faster there too).
  assert mode('auto', 'mixed_bfloat16', {'avx512_bf16'}) == 'matmul'
  assert mode('auto', 'float32', {'avx512_bf16'}) == 'native'
  assert mode('auto', 'float32', {'avx2', 'fma'}) == 'native'
  assert mode('native', 'mixed_bfloat16', amx) == 'native'
  assert mode('matmul', 'float32', set()) == 'matmul'
  with pytest.raises(ValueError, match='--conv_gradients=fast: one of auto'):
    mode('fast', 'float32', amx)


def test_corrections_are_needed_only_where_onednn_measured_wrong():
  needed = conv_gradients.needs_correction
  assert needed({'avx2', 'fma'}) == conv_gradients.onednn_enabled()
  assert not needed({'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16'})
  assert not needed({'avx2', 'amx_bf16', 'amx_tile'})


def test_filter_gradient_path_follows_the_measured_thresholds():
  takes = conv_gradients.matmul_filter_gradient
  # ResNet50 at 128 px, batch 32 (benchmarks/conv_gradients.py): every 1×1,
  # strided ones too (they read the subsampled input); 3×3 in conv4 and
  # conv5 (N <= 2,048), not in conv2 and conv3.
  assert takes((1, 1, 256, 64), 1, 32 * 32 * 32)
  assert takes((1, 1, 512, 1024), 2, 32 * 8 * 8)
  assert takes((1, 1, 256, 512), 2, 32 * 16 * 16)
  assert takes((3, 3, 256, 256), 1, 32 * 8 * 8)
  assert not takes((3, 3, 128, 128), 1, 32 * 16 * 16)
  assert not takes((7, 7, 6, 64), 2, 32 * 64 * 64)


@pytest.mark.parametrize('kernel,stride,padding,side', [
    (1, 2, 'SAME', 8), (3, 1, 'SAME', 8), (3, 2, 'SAME', 9), (7, 2, 'VALID', 12)])
def test_onednn_probe_reference_equals_a_small_convolution(kernel, stride,
                                                           padding, side):
  # benchmarks/onednn_gradients.py judges TensorFlow's kernels by this
  # float64 reference, so the reference itself is checked here, against
  # the same sums taken by a double-precision tf.nn.conv2d.
  from benchmarks import onednn_gradients
  rng = np.random.default_rng(7)
  x = rng.normal(size=[2, side, side, 3])
  w = rng.normal(size=[kernel, kernel, 3, 4])
  tx, tw = tf.constant(x), tf.constant(w)
  with tf.GradientTape() as tape:
    tape.watch([tx, tw])
    y = tf.nn.conv2d(tx, tw, stride, padding)
  dy = rng.normal(size=y.shape)
  expected = (y,) + tuple(tape.gradient(y, [tx, tw],
                                        output_gradients=tf.constant(dy)))
  got = onednn_gradients.reference(x, w, dy, stride, padding)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, e.numpy(), rtol=1e-9, atol=1e-9)


X86 = platform.machine().lower() in ('x86_64', 'amd64')


def _python(code: str, **env) -> str:
  environment = {k: v for k, v in os.environ.items()
                 if k != 'TF_ENABLE_ONEDNN_OPTS'}
  environment.update(env)
  done = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                        env=environment, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not X86, reason='oneDNN is turned on for x86 CPUs only')
def test_importing_lmid_tf_turns_onednn_on_unless_told_not_to():
  code = ('import lmid_tf\n'
          'from lmid_tf.speed import conv_gradients\n'
          'print(conv_gradients.onednn_enabled())')
  assert _python(code) == 'True'
  assert _python(code, TF_ENABLE_ONEDNN_OPTS='0') == 'False'


@pytest.mark.parametrize('side,padding', [(8, 'SAME'), (16, 'VALID'),
                                          (9, 'SAME')])
def test_corrected_strided_pointwise_filter_gradient_equals_the_reference(
    side, padding):
  from benchmarks import onednn_gradients
  inputs = keras.Input((side, side, 5), batch_size=2)
  net = keras.Model(inputs, [
      keras.layers.Conv2D(6, 1, strides=2, padding=padding, name='wrong')(
          inputs),
      keras.layers.Conv2D(6, 3, strides=2, padding=padding, name='right')(
          inputs)])
  corrected = conv_gradients.correct(net)
  assert corrected == (1 if conv_gradients.needs_correction() else 0)
  assert [type(l).__name__ for l in net.layers[1:]] == (
      ['MatmulConv2D'] * corrected + ['Conv2D'] * (1 - corrected) +
      ['Conv2D'])
  rng = np.random.default_rng(11)
  x = rng.normal(size=[2, side, side, 5]).astype(np.float32)
  # oneDNN's wrong kernel was not wrong every time: take several steps.
  for step in range(5):
    weights = [rng.normal(size=o.shape).astype(np.float32)
               for o in net.outputs]
    with tf.GradientTape() as tape:
      outputs = net(x)
      loss = sum(tf.reduce_sum(o * w) for o, w in zip(outputs, weights))
    grads = tape.gradient(loss, [net.get_layer('wrong').kernel,
                                 net.get_layer('right').kernel])
    for name, grad, dy in zip(('wrong', 'right'), grads, weights):
      kernel = net.get_layer(name).kernel.numpy()
      _, _, expected = onednn_gradients.reference(
          x, kernel, dy, 2, padding)
      np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4,
                                 atol=1e-4, err_msg=f'{name}, step {step}')
  conv_gradients.restore(net)
  assert type(net.get_layer('wrong')) is keras.layers.Conv2D
  # restore() clears the mark of a corrected layer; where oneDNN needs no
  # correction the layer was never swapped and has no mark.
  if corrected:
    assert net.get_layer('wrong')._corrected_only is False
  else:
    assert not hasattr(net.get_layer('wrong'), '_corrected_only')


# One gradient of ResNet50 (its six strided 1×1 convolutions included) or
# MobileNetV2-0.35 (depthwise convolutions) at 32 px from fixed weights, traced as training steps are, saved as npz. Its
# batch norms run in inference mode: in training mode, over 4 values per
# channel in conv5, a change of 1e-6 in the input moved the gradients by
# 20-30 % with oneDNN off, so float noise alone would decide the test.
_GRADIENT = """
import sys
import numpy as np
import lmid_tf
import keras
import tensorflow as tf
from lmid_tf.speed import conv_gradients
out, weights, write, backbone = sys.argv[1:]
keras.utils.set_random_seed(0)
net = dict(resnet50=keras.applications.ResNet50,
           mobilenet_v2=lambda **kw: keras.applications.MobileNetV2(
               alpha=0.35, **kw))[backbone](
    weights=None, include_top=False, input_shape=(32, 32, 3), pooling='avg')
if write:
  net.save_weights(weights)
else:
  net.load_weights(weights)
corrected = conv_gradients.correct(net)
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(size=(4, 32, 32, 3)), tf.float32)
w = tf.constant(rng.normal(size=(4, net.output.shape[-1])), tf.float32)

@tf.function
def gradient(x, w):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(net(x, training=False) * w)
  return tape.gradient(loss, net.trainable_variables)

np.savez(out, **{v.path: g.numpy()
                 for v, g in zip(net.trainable_variables, gradient(x, w))})
print(corrected)
"""


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason='oneDNN is turned on for x86 CPUs only')
@pytest.mark.parametrize('backbone,corrected', [('resnet50', '6'),
                                                ('mobilenet_v2', '0')])
def test_network_gradients_with_onednn_equal_those_without(
    backbone, corrected, tmp_path):
  weights = str(tmp_path / f'{backbone}.weights.h5')
  off, on = str(tmp_path / 'off.npz'), str(tmp_path / 'on.npz')
  code = _GRADIENT.replace('sys.argv[1:]',
                           repr([off, weights, 'write', backbone]))
  assert _python(code, TF_ENABLE_ONEDNN_OPTS='0') == '0'
  code = _GRADIENT.replace('sys.argv[1:]', repr([on, weights, '', backbone]))
  if set(precision.cpu_flags()) & set(conv_gradients.ONEDNN_DEFAULT_CPU_FLAGS):
    corrected = '0'   # a CPU where oneDNN's kernels measured right
  assert _python(code, TF_ENABLE_ONEDNN_OPTS='1') == corrected
  reference, got = np.load(off), np.load(on)
  assert sorted(reference.files) == sorted(got.files)
  # A gradient that is itself rounding noise (a bias before a batch norm)
  # is compared on the scale of the network's gradients.
  scale = max(np.abs(reference[name]).max() for name in reference.files)
  worst = {name: np.abs(got[name] - reference[name]).max() /
           max(np.abs(reference[name]).max(), 1e-2 * scale)
           for name in reference.files}
  # float32 sums in another order: 3e-6 measured on an AVX2 CPU; a wrong
  # kernel is off by whole units.
  assert max(worst.values()) < 1e-4, sorted(
      worst.items(), key=lambda kv: kv[1])[-5:]

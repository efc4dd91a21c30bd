"""lmid_tf/speed/upsampling.py: the swapped upsampling gives Keras' results
bit for bit, without the saturating cast's ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lmid_tf import config
from lmid_tf.modeling import model as model_lib
from lmid_tf.speed import precision
from lmid_tf.speed import upsampling


def _values_and_gradients(layer, x, weights):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    # A weighting that is not all ones, so the gradient varies by position.
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
  return y, tape.gradient(loss, x)


@pytest.mark.parametrize('dtype', [tf.bfloat16, tf.float16])
@pytest.mark.parametrize('size', [(2, 2), (2, 3)])
def test_bilinear_upsampling_equals_keras_bit_for_bit(dtype, size):
  rng = np.random.default_rng(0)
  # Magnitudes from 1e-3 up to the type's largest finite value, where the
  # clip that is skipped would act if a sample could leave the range.
  big = tf.as_dtype(dtype).max
  x = rng.normal(size=(2, 5, 4, 3)) * 10.0 ** rng.integers(
      -3, 4, size=(2, 5, 4, 3))
  x[0, 0, 0, 0], x[0, 0, 1, 0], x[1, 4, 3, 2] = big, big, -big
  x = tf.cast(x, dtype)
  weights = tf.constant(rng.normal(size=(2, 5 * size[0], 4 * size[1], 3)),
                        tf.float32)
  plain = keras.layers.UpSampling2D(size, interpolation='bilinear',
                                    dtype=dtype.name)
  expected = _values_and_gradients(plain, x, weights)
  plain.__class__ = upsampling.BilinearUpSampling2D
  got = _values_and_gradients(plain, x, weights)
  for want, have in zip(expected, got):
    assert have.dtype == want.dtype
    np.testing.assert_array_equal(tf.cast(have, tf.float32).numpy(),
                                  tf.cast(want, tf.float32).numpy())


def _op_types(layer, dtype):
  traced = tf.function(lambda x: layer(x)).get_concrete_function(
      tf.TensorSpec([2, 4, 4, 3], dtype))
  return {op.type for op in traced.graph.get_operations()}


@pytest.mark.parametrize('dtype', [tf.bfloat16, tf.float16])
def test_the_saturating_clip_is_gone(dtype):
  layer = keras.layers.UpSampling2D(2, interpolation='bilinear',
                                    dtype=dtype.name)
  assert {'Minimum', 'Maximum'} <= _op_types(layer, dtype)
  layer.__class__ = upsampling.BilinearUpSampling2D
  assert not {'Minimum', 'Maximum'} & _op_types(layer, dtype)
  assert 'ResizeBilinear' in _op_types(layer, dtype)


@pytest.mark.parametrize('interpolation,dtype', [
    ('nearest', 'bfloat16'),    # not bilinear
    ('bilinear', 'float32'),    # no cast to skip
    ('bilinear', 'int32'),      # Keras rounds before its cast
])
def test_other_upsamplings_keep_the_keras_path(interpolation, dtype):
  x = tf.cast(tf.reshape(tf.range(8) * 3, [1, 2, 2, 2]), dtype)
  plain = keras.layers.UpSampling2D(2, interpolation=interpolation,
                                    dtype=dtype)
  swapped = upsampling.BilinearUpSampling2D(2, interpolation=interpolation,
                                            dtype=dtype)
  for layer in (plain, swapped):
    np.testing.assert_array_equal(
        tf.cast(layer(x), tf.float32).numpy(),
        tf.cast(plain(x), tf.float32).numpy())
  keras_ops = _op_types(plain, tf.as_dtype(dtype))
  assert _op_types(swapped, tf.as_dtype(dtype)) == keras_ops


def test_use_and_restore_swap_the_reconstruction_head_in_place():
  with precision.building_under('mixed_bfloat16'):
    cfg = config.resolve(config.Settings(
        backbone='small_cnn', image_size=32, init='none',
        variant='landmark_id', schedule=(
            'timed trains=all lr=1e-4 epochs=1 reconstruct=1')),
        num_classes=4, channels=3, num_landmarks=3)
    net = model_lib.build_model(cfg.model)
  rng = np.random.default_rng(1)
  inputs = {'image': tf.constant(rng.normal(size=(2, 32, 32, 3)),
                                 tf.float32),
            'heatmaps': tf.constant(rng.random((2, 32, 32, 3)), tf.float32)}

  def heatmaps_and_gradients():
    with tf.GradientTape() as tape:
      heatmaps = net(inputs, training=True)['heatmaps']
      # Weights that vary by position, so every gradient does too.
      weights = tf.cast(tf.reshape(tf.range(tf.size(heatmaps)) % 7,
                                   heatmaps.shape), tf.float32)
      loss = tf.reduce_sum(heatmaps * weights)
    return [heatmaps] + tape.gradient(loss, net.trainable_variables)

  # training=True moves the batch norms' statistics; each pass starts from
  # the same weights and statistics.
  saved = net.get_weights()
  expected = heatmaps_and_gradients()
  net.set_weights(saved)
  swapped = upsampling.use(net)
  assert swapped == len([layer for layer in model_lib.leaf_layers(net)
                         if isinstance(layer, keras.layers.UpSampling2D)])
  assert swapped > 0
  got = heatmaps_and_gradients()
  for want, have in zip(expected, got):
    if want is None:
      assert have is None
      continue
    np.testing.assert_array_equal(have.numpy(), want.numpy())
  upsampling.restore(net)
  assert all(type(layer) is keras.layers.UpSampling2D
             for layer in model_lib.leaf_layers(net)
             if isinstance(layer, keras.layers.UpSampling2D))

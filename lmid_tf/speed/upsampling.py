"""Bilinear upsampling without the saturating cast that mixed precision adds.

TensorFlow's ResizeBilinear always returns float32. Keras'
`ops.image.resize` (which keras.layers.UpSampling2D calls) casts that back
to the input's dtype (bfloat16 under mixed_bfloat16, float16 under
mixed_float16) with a saturating cast: a clip to that type's range
(Minimum, Maximum) before the Cast, and in the backward pass two
comparisons and two selects. That is six passes over the activations per
layer, the largest at the reconstruction head's 64 × 64 maps. In the
ResNet50 Landmark-Id training step at 128 px (batch 32) these 18 ops took
22.5 ms of 826 ms of op time on a Zen 4 CPU; skipping them made the step
2.6 % faster, in 16 of 16 blocks of benchmarks/paired_steps.py
(docs/journal/2026-12-08-zen4-speed.md).

The clip does not change a finite value of a trained network: a bilinear
sample is a convex combination of bfloat16 (or float16) inputs, so it lies
between them and inside the type's range. Only non-finite inputs, or
neighbours of opposite sign beyond about 1.7e38 whose float32 difference
overflows, could come out differently, and such a step has failed
already. `BilinearUpSampling2D` therefore calls the same kernel and casts
plainly: the same outputs and gradients, bit for bit
(tests/test_upsampling.py). Other inputs (float32, which needs no cast;
integers, which Keras rounds first) take Keras' own path.

`use(net)` swaps the layers in place for training; `restore(net)` swaps them
back before saving, so saved models hold plain Keras layers.
"""

import keras
import tensorflow as tf

from lmid_tf.modeling import model


@keras.saving.register_keras_serializable(package='lmid_tf')
class BilinearUpSampling2D(keras.layers.UpSampling2D):
  """keras.layers.UpSampling2D with the same config and results; bilinear,
  channels-last upsampling of a bfloat16 or float16 input skips the
  saturating cast (module docstring)."""

  def call(self, inputs):
    if (self.interpolation != 'bilinear'
        or self.data_format != 'channels_last'
        or inputs.dtype not in (tf.bfloat16, tf.float16)
        or len(inputs.shape) != 4):
      return super().call(inputs)
    height, width = self.size
    shape = tf.shape(inputs)
    resized = tf.raw_ops.ResizeBilinear(
        images=inputs, size=tf.stack([shape[1] * height, shape[2] * width]),
        align_corners=False, half_pixel_centers=True)
    return tf.cast(resized, inputs.dtype)


def use(net: keras.Model) -> int:
  """Turns every plain UpSampling2D of `net` (nested models included) into a
  BilinearUpSampling2D in place; returns how many. Call before the first
  training step is traced."""
  return model.swap_layer_class(net, keras.layers.UpSampling2D,
                                BilinearUpSampling2D)


def restore(net: keras.Model) -> None:
  """Undoes `use`: plain keras.layers.UpSampling2D again."""
  model.swap_layer_class(net, BilinearUpSampling2D, keras.layers.UpSampling2D)

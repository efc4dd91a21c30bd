"""Batch normalisation through TensorFlow's fused kernel (--fused_batch_norm).

Keras 3 normalises with separate ops (moments, then arithmetic, each a pass
over the activations, plus casts under mixed precision); TensorFlow's
FusedBatchNormV3 does the forward in one pass and its gradient in another.
On a CPU, batch norm is a large share of a ResNet training step:
`benchmarks/peer_pytorch.py --tf_settings=...fused` measures what the fused
kernel saves. `lmid_tf.train --fused_batch_norm` fuses for training and
turns the layers back into plain Keras ones before saving, so saved models
load anywhere.
"""

import keras
import tensorflow as tf

from lmid_tf.modeling import model


@keras.saving.register_keras_serializable(package='lmid_tf')
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization with the same variables and, up to
  float rounding, the same results, computed by FusedBatchNormV3 on 4-D
  channels-last inputs; other cases (synchronized statistics, other ranks
  or axes) take the Keras path."""

  def call(self, inputs, training=None, mask=None):
    axis = self.axis if isinstance(self.axis, int) else self.axis[0]
    if (self.synchronized or len(inputs.shape) != 4
        or axis not in (-1, 3)):
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones([channels])
    offset = self.beta if self.center else tf.zeros([channels])
    if training and self.trainable:
      outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          inputs, tf.convert_to_tensor(scale), tf.convert_to_tensor(offset),
          epsilon=self.epsilon, is_training=True)
      # The kernel returns the unbiased variance; Keras keeps the biased one.
      count = tf.cast(tf.size(inputs) // channels, variance.dtype)
      variance = variance * (count - 1.0) / count
      for moving, batch in ((self.moving_mean, mean),
                            (self.moving_variance, variance)):
        moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
      return outputs
    outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.convert_to_tensor(scale), tf.convert_to_tensor(offset),
        mean=tf.convert_to_tensor(self.moving_mean),
        variance=tf.convert_to_tensor(self.moving_variance),
        epsilon=self.epsilon, is_training=False)
    return outputs


def fuse(net: keras.Model) -> int:
  """Turns every BatchNormalization of `net` (nested models included) into
  a FusedBatchNormalization in place; weights and config are unchanged.
  Returns how many. Call before the first training step is traced."""
  return model.swap_layer_class(net, keras.layers.BatchNormalization,
                                FusedBatchNormalization)


def unfuse(net: keras.Model) -> None:
  """Undoes `fuse`: plain keras.layers.BatchNormalization again."""
  model.swap_layer_class(net, FusedBatchNormalization,
                         keras.layers.BatchNormalization)

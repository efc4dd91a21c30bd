"""Batch norm folded into the convolution before it, for inference.

At inference a batch norm is a fixed per-channel affine map, so after a
convolution it can be folded into the convolution's kernel and bias:

  BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta,
  s = gamma / sqrt(moving_variance + epsilon).

What is left after each convolution is one bias add, which TensorFlow's
graph optimiser fuses with the convolution and the ReLU after it into one
oneDNN kernel, where Keras 3 would run the batch norm as separate ops (and,
under mixed precision, casts). The export and `benchmarks/peer_pytorch.py`
fold a copy of the trained model; training never sees a folded one.
"""

import keras
import numpy as np
import tensorflow as tf

from lmid_tf.modeling import model


@keras.saving.register_keras_serializable(package='lmid_tf')
class FoldedBatchNormalization(keras.layers.BatchNormalization):
  """A batch norm whose scale already sits in the convolution before it:
  only `beta` (the folded bias) is added. Inference only."""

  def call(self, inputs, training=None, mask=None):
    return tf.nn.bias_add(inputs, tf.cast(self.beta, inputs.dtype))


def producer(layer: keras.layers.Layer):
  """The layer whose output is `layer`'s only input, or None."""
  if len(layer._inbound_nodes) != 1:
    return None
  inputs = layer._inbound_nodes[0].input_tensors
  if len(inputs) != 1:
    return None
  return inputs[0]._keras_history.operation


def _foldable(conv, norm) -> bool:
  if not isinstance(conv, (keras.layers.Conv2D,
                           keras.layers.DepthwiseConv2D)):
    return False
  if isinstance(conv, keras.layers.DepthwiseConv2D) and (
      conv.depth_multiplier != 1):
    return False
  axis = norm.axis if isinstance(norm.axis, int) else norm.axis[0]
  return (len(conv._inbound_nodes) == 1 and len(conv._outbound_nodes) == 1
          and axis in (-1, 3) and conv.data_format == 'channels_last'
          and norm.center and not norm.synchronized)


def fold(net: keras.Model) -> int:
  """Folds, in place, every batch norm of `net` (nested models included)
  that directly follows a convolution used only by it. Returns how many.

  The folded network computes the same function at inference (up to float
  rounding) and can no longer be trained: call it on a copy.
  """
  folded = 0
  for norm in list(model.batch_norms(net)):
    if isinstance(norm, FoldedBatchNormalization):
      continue
    conv = producer(norm)
    if conv is None or not _foldable(conv, norm):
      continue
    gamma = (norm.gamma.numpy() if norm.scale
             else np.ones(norm.moving_mean.shape, np.float32))
    scale = gamma / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    kernel = conv.kernel.numpy()
    bias = (conv.bias.numpy() if conv.use_bias
            else np.zeros(scale.shape, np.float32))
    # The output channel is the kernel's last axis for Conv2D and, with a
    # multiplier of 1, the input-channel axis (2) for DepthwiseConv2D.
    if isinstance(conv, keras.layers.DepthwiseConv2D):
      kernel = kernel * scale[None, None, :, None]
    else:
      kernel = kernel * scale
    conv.kernel.assign(kernel)
    norm.beta.assign((bias - norm.moving_mean.numpy()) * scale
                     + norm.beta.numpy())
    # The conv's own bias is now in beta: skip its add (checked per call).
    conv.use_bias = False
    norm.__class__ = FoldedBatchNormalization
    folded += 1
  return folded

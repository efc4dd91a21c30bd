"""Adam through TensorFlow's fused kernel.

Keras 3's Adam updates each variable with about ten separate element-wise
ops, each a pass over the weights and both moment slots; for ResNet50's
25 M weights that is over a gigabyte of memory traffic per step, a visible
share of a CPU training step. TensorFlow's ResourceApplyAdam does the same
update (the same formula: Kingma & Ba's epsilon-hat form, as Keras computes
it) in one pass: 3x faster on ResNet50's weights alone. Inside a whole
training step `benchmarks/peer_pytorch.py --tf_settings=..._fusedadam`
measured no gain (docs/journal/2026-11-round1-2.md), so lmid_tf.train keeps Keras' Adam;
this stays as a measured setting of that benchmark.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='lmid_tf')
class FusedAdam(keras.optimizers.Adam):
  """keras.optimizers.Adam with the same variables and results (to float
  rounding), updating each weight with ResourceApplyAdam. Under a
  tf.distribute strategy, or with amsgrad, it takes Keras' path."""

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or tf.distribute.has_strategy():
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    index = self._get_variable_index(variable)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle,
        m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype), use_locking=False)

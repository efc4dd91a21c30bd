"""Adam through TensorFlow's fused kernel.

Keras 3's Adam updates each variable with about ten separate element-wise
ops, each a pass over the weights and both moment slots; for ResNet50's
25 M weights that is over a gigabyte of memory traffic per step, a visible
share of a CPU training step. TensorFlow's ResourceApplyAdam does the same
update (the same formula: Kingma & Ba's epsilon-hat form, as Keras computes
it) in one pass: 3x faster on ResNet50's weights alone. Inside a whole
training step its gain was within the noise of one benchmark run after
another (docs/journal/2026-11-round1-2.md); timed against Keras' Adam in
alternating blocks (`benchmarks/paired_steps.py`), once the rest of the step
had become faster, the ResNet50 step at 128 px ran 2.0 % faster (14 of 16
blocks) on a Zen 4 CPU (docs/journal/2026-12-08-zen4-speed.md), so
lmid_tf.train uses it.
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

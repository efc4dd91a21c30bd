"""The training objective as a Keras model wrapping the functional network.

  L = L_ID + L_triplet + beta * L_center + alpha * L_HR     (paper eq. 1-2)

A custom `train_step` is needed for what `compile` cannot say: the triplet
and center losses read the labels, and the class centres have their own
optimizer. As in Bag of Tricks, the centres move by SGD (lr 0.5) on the
*unweighted* center loss, i.e. their gradient is rescaled by 1/beta.
"""

import dataclasses

import keras
import tensorflow as tf

from lmid_tf.modeling import losses


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Built by config.loss_config (defaults there)."""
  label_smoothing: float
  triplet_margin: float
  center_weight: float           # beta
  center_lr: float
  heatmap_weight: float          # alpha, in phases that reconstruct


class Objective(keras.Model):
  """Trains `net` (outputs embedding, logits[, heatmaps]) with eq. 2."""

  def __init__(self, net: keras.Model, num_classes: int, cfg: LossConfig,
               **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.cfg = cfg
    self.centers = losses.Centers(num_classes,
                                  net.output['embedding'].shape[-1])
    self.reconstruct = False
    names = ('loss', 'id_loss', 'triplet_loss', 'center_loss',
             'heatmap_loss', 'id_accuracy')
    self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
    self.center_optimizer = None
    # Everything it holds is built already (functional net, centres).
    self.built = True

  def call(self, inputs, training=False):
    return self.net(inputs, training=training)

  def compile(self, optimizer, reconstruct: bool = False, **kwargs):
    """`reconstruct` switches the heatmap loss on (stage 2).

    Both optimizers are built here, over the variables this phase trains,
    so that a checkpoint can restore their slots before the first step.
    Call it inside the strategy's scope.
    """
    self.reconstruct = bool(reconstruct and 'heatmaps' in self.net.output)
    self.center_optimizer = keras.optimizers.SGD(self.cfg.center_lr)
    super().compile(optimizer=optimizer, **kwargs)
    self.optimizer.build(self.net.trainable_variables)
    self.center_optimizer.build(self.centers.trainable_variables)

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras 3 reduces a sample batch across replicas here, eagerly, which
    # fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
    # Everything it would build (network, centres, optimizers) is built.
    del iterator, data_batch

  @property
  def metrics(self):
    return list(self.trackers.values())

  def compute_losses(self, outputs, targets, centers):
    cfg = self.cfg
    labels = targets['label']
    values = {
        'id_loss': losses.smoothed_cross_entropy(labels, outputs['logits'],
                                                 cfg.label_smoothing),
        'triplet_loss': losses.batch_hard_triplet(outputs['embedding'], labels,
                                                  cfg.triplet_margin),
        'center_loss': losses.center_loss(outputs['embedding'], centers),
    }
    total = (values['id_loss'] + values['triplet_loss']
             + cfg.center_weight * values['center_loss'])
    if self.reconstruct:
      values['heatmap_loss'] = losses.heatmap_reconstruction(
          targets['heatmaps'], outputs['heatmaps'])
      total += cfg.heatmap_weight * values['heatmap_loss']
    values['loss'] = total
    return values

  def train_step(self, data):
    inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape() as tape:
      outputs = self.net(inputs, training=True)
      with tf.GradientTape() as center_tape:
        centers = self.centers(targets['label'])
        values = self.compute_losses(outputs, targets, centers)
      # Gradients are summed over replicas, so each replica's share is 1/R.
      scaled = self.optimizer.scale_loss(values['loss'] / replicas)
    net_vars = self.net.trainable_variables
    self.optimizer.apply(tape.gradient(scaled, net_vars), net_vars)
    center_vars = self.centers.trainable_variables
    center_grads = center_tape.gradient(values['center_loss'], center_vars)
    self.center_optimizer.apply(
        [tf.convert_to_tensor(g) / replicas for g in center_grads],
        center_vars)

    predictions = tf.argmax(outputs['logits'], axis=-1, output_type=tf.int32)
    values['id_accuracy'] = tf.reduce_mean(tf.cast(
        tf.equal(predictions, targets['label']), tf.float32))
    for name, tracker in self.trackers.items():
      if name in values:
        tracker.update_state(values[name])
    results = {name: tracker.result() for name, tracker in
               self.trackers.items() if name in values}
    if isinstance(tf.distribute.get_strategy(),
                  tf.distribute.MultiWorkerMirroredStrategy):
      # Keras averages each result over the workers along axis 0
      # (reduce_per_replica), which a scalar lacks; the average is a scalar.
      results = {name: tf.reshape(v, [1]) for name, v in results.items()}
    return results

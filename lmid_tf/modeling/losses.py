"""The losses of Bag of Tricks (paper eq. 1) and heatmap reconstruction (eq. 2).

  L = L_ID + L_triplet + beta * L_center + alpha * L_HR

All are plain functions of tensors returning a scalar; only the center loss
has state (its class centres), held by the small `Centers` layer.
"""

import keras
import tensorflow as tf


def smoothed_cross_entropy(labels, logits, epsilon: float = 0.1):
  """Label-smoothed cross-entropy, averaged over the batch.

  Args:
    labels: [B] int class ids; logits: [B, N].
  """
  num_classes = tf.shape(logits)[-1]
  target = tf.one_hot(labels, num_classes, dtype=tf.float32)
  target = (1.0 - epsilon) * target + epsilon / tf.cast(num_classes, tf.float32)
  log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  return -tf.reduce_mean(tf.reduce_sum(target * log_probs, axis=-1))


def pairwise_distances(embeddings):
  """[B, D] -> [B, B] Euclidean distances (gradient-safe at zero)."""
  squared = tf.reduce_sum(tf.square(embeddings), axis=1)
  d2 = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(
      embeddings, embeddings, transpose_b=True)
  return tf.sqrt(tf.maximum(d2, 1e-12))


def batch_hard_triplet(embeddings, labels, margin: float = 0.3):
  """Batch-hard triplet loss (Hermans et al.): for each anchor, its farthest
  positive and nearest negative in the batch.

  Args:
    embeddings: [B, D]; labels: [B] int. Every anchor needs a positive and a
      negative in the batch, which P x K sampling guarantees.
  """
  embeddings = tf.cast(embeddings, tf.float32)
  distances = pairwise_distances(embeddings)
  same = tf.equal(labels[:, None], labels[None, :])
  hardest_positive = tf.reduce_max(
      tf.where(same, distances, tf.zeros_like(distances)), axis=1)
  hardest_negative = tf.reduce_min(
      tf.where(same, tf.fill(tf.shape(distances), 1e9), distances), axis=1)
  return tf.reduce_mean(tf.nn.relu(hardest_positive - hardest_negative + margin))


def center_loss(embeddings, centers):
  """Mean squared distance of each embedding to its class centre.

  Args:
    embeddings: [B, D]; centers: [B, D], the centre of each sample's class.
  """
  return tf.reduce_mean(tf.reduce_sum(
      tf.square(tf.cast(embeddings, tf.float32) - centers), axis=1))


def heatmap_reconstruction(target, predicted):
  """Binary cross-entropy between input heatmaps and their reconstruction.

  Args:
    target, predicted: [B, R, R, k] in [0, 1].
  """
  predicted = tf.clip_by_value(tf.cast(predicted, tf.float32), 1e-7, 1 - 1e-7)
  return -tf.reduce_mean(target * tf.math.log(predicted)
                         + (1.0 - target) * tf.math.log(1.0 - predicted))


class Centers(keras.layers.Layer):
  """Learnable class centres of the center loss: [num_classes, dim]."""

  def __init__(self, num_classes: int, dim: int, **kwargs):
    # Centres stay float32 under mixed precision, like the embedding.
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.num_classes, self.dim = num_classes, dim
    self.centers = self.add_weight(
        shape=(num_classes, dim), initializer='random_normal',
        dtype='float32', name='centers')

  def call(self, labels):
    """[B] int labels -> [B, dim] their centres."""
    return tf.gather(self.centers, labels)

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes,
            'dim': self.dim}

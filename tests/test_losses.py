"""Each loss against a plain numpy reference."""

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf.modeling import losses


def _np_smoothed_ce(labels, logits, eps):
  n = logits.shape[1]
  target = np.full(logits.shape, eps / n)
  target[np.arange(len(labels)), labels] += 1 - eps
  shifted = logits - logits.max(1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  return -(target * log_probs).sum(1).mean()


def _np_batch_hard(emb, labels, margin):
  total = 0.0
  for i in range(len(emb)):
    d = np.linalg.norm(emb - emb[i], axis=1)
    pos = d[(labels == labels[i])].max()
    neg = d[(labels != labels[i])].min()
    total += max(0.0, pos - neg + margin)
  return total / len(emb)


@pytest.mark.parametrize('eps', [0.0, 0.1])
def test_smoothed_cross_entropy(eps):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, 6)
  value = losses.smoothed_cross_entropy(tf.constant(labels), logits, eps)
  np.testing.assert_allclose(value, _np_smoothed_ce(labels, logits, eps),
                             rtol=1e-5)


@pytest.mark.parametrize('margin', [0.3, 1.0])
def test_batch_hard_triplet(margin):
  rng = np.random.default_rng(1)
  emb = rng.normal(size=(8, 4)).astype(np.float32)
  labels = np.repeat(np.arange(4), 2)
  value = losses.batch_hard_triplet(emb, tf.constant(labels), margin)
  np.testing.assert_allclose(value, _np_batch_hard(emb, labels, margin),
                             rtol=1e-5)


def test_triplet_is_zero_for_well_separated_identities():
  emb = np.array([[0, 0], [0, 0.1], [5, 5], [5, 5.1]], np.float32)
  value = losses.batch_hard_triplet(emb, tf.constant([0, 0, 1, 1]), 0.3)
  assert float(value) == 0.0
  with tf.GradientTape() as tape:
    x = tf.Variable(np.zeros((4, 2), np.float32))  # all distances zero
    loss = losses.batch_hard_triplet(x, tf.constant([0, 0, 1, 1]), 0.3)
  assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_center_loss_and_centers_layer():
  rng = np.random.default_rng(2)
  emb = rng.normal(size=(5, 3)).astype(np.float32)
  labels = np.array([0, 1, 1, 2, 0])
  layer = losses.Centers(3, 3)
  centers = layer(tf.constant(labels)).numpy()
  np.testing.assert_allclose(centers, layer.centers.numpy()[labels])
  expected = ((emb - centers) ** 2).sum(1).mean()
  np.testing.assert_allclose(losses.center_loss(emb, centers), expected,
                             rtol=1e-5)
  assert losses.Centers.from_config(layer.get_config()).centers.shape == (3, 3)


def test_heatmap_reconstruction_bce():
  rng = np.random.default_rng(3)
  target = rng.random((2, 4, 4, 3)).astype(np.float32)
  predicted = rng.random((2, 4, 4, 3)).astype(np.float32) * 0.98 + 0.01
  expected = -(target * np.log(predicted)
               + (1 - target) * np.log(1 - predicted)).mean()
  np.testing.assert_allclose(
      losses.heatmap_reconstruction(target, predicted), expected, rtol=1e-5)
  # Saturated predictions stay finite.
  assert np.isfinite(losses.heatmap_reconstruction(
      np.ones((1, 2, 2, 1), np.float32), np.zeros((1, 2, 2, 1), np.float32)))

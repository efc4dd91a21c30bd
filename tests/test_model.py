"""The network: shapes, first conv, weight loading, trainable groups."""

import keras
import numpy as np
import pytest

from lmid_tf.modeling import model


def _cfg(**kwargs):
  base = dict(num_classes=7, image_size=32, channels=1, num_landmarks=3,
              backbone='mobilenet_v2_0.35', embedding_dim=16, init='none',
              reconstruction=True, reconstruction_size=64,
              landmark_pooling_bins=0, first_conv_init='random')
  base.update(kwargs)
  return model.ModelConfig(**base)


def _inputs(cfg, batch=2):
  rng = np.random.default_rng(0)
  s = cfg.image_size
  inputs = {'image': rng.normal(size=(batch, s, s, cfg.channels))
            .astype('float32')}
  if cfg.num_landmarks:
    inputs['heatmaps'] = rng.random((batch, s, s, cfg.num_landmarks),
                                    dtype=np.float32)
  return inputs


@pytest.mark.parametrize('k', [3, 5])
@pytest.mark.parametrize('backbone', ['mobilenet_v2_0.35', 'resnet50'])
def test_landmark_id_outputs_and_first_conv(k, backbone):
  cfg = _cfg(num_landmarks=k, backbone=backbone)
  net = model.build_model(cfg)
  outputs = net(_inputs(cfg), training=False)
  assert outputs['embedding'].shape == (2, 16)
  assert outputs['logits'].shape == (2, 7)
  assert outputs['heatmaps'].shape == (2, 64, 64, k)
  heat = outputs['heatmaps'].numpy()
  assert heat.min() >= 0 and heat.max() <= 1
  first = model.first_conv(net.get_layer('backbone'))
  assert first.kernel.shape[2] == 1 + k   # C + k input channels


def test_baseline_has_image_input_only():
  cfg = _cfg(num_landmarks=0, channels=3)
  net = model.build_model(cfg)
  assert [i.name for i in net.inputs] == ['image']
  assert set(net.output) == {'embedding', 'logits'}
  assert model.first_conv(net.get_layer('backbone')).kernel.shape[2] == 3


def test_embedding_model_shares_weights_and_is_unit_length():
  cfg = _cfg()
  net = model.build_model(cfg)
  embedder = model.embedding_model(net)
  inputs = _inputs(cfg)
  before = embedder(inputs)['embedding'].numpy()
  np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1, rtol=1e-5)
  dense = net.get_layer('embedding')
  dense.kernel.assign(dense.kernel * 0 + 0.01)
  assert not np.allclose(embedder(inputs)['embedding'].numpy(), before)


def test_weights_load_by_name_skipping_only_the_first_conv(tmp_path):
  # A 3-channel reference backbone stands in for ImageNet weights.
  reference = keras.applications.MobileNetV2(
      include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
  path = str(tmp_path / 'reference.weights.h5')
  reference.save_weights(path)
  cfg = _cfg(init=path)
  backbone = model.build_model(cfg).get_layer('backbone')
  first = model.first_conv(backbone)
  copied = 0
  for layer in backbone.layers:
    if not layer.weights:
      continue
    same = all(np.array_equal(a, b) for a, b in zip(
        layer.get_weights(), reference.get_layer(layer.name).get_weights()))
    if layer is first:
      assert not same
    else:
      assert same, layer.name
      copied += 1
  assert copied > 50
  skipped = model.load_pretrained(backbone, cfg)
  assert skipped == [first.name]


@pytest.mark.parametrize('channels', [3, 1])
def test_first_conv_widened_from_the_image_filters(tmp_path, channels):
  # --first_conv_init=image: the backbone starts as the pretrained
  # image-only one (heatmap filters at zero), so its features do not depend
  # on the heatmaps and equal the reference's on the image.
  reference = keras.applications.MobileNetV2(
      include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
  path = str(tmp_path / 'reference.weights.h5')
  reference.save_weights(path)
  cfg = _cfg(init=path, channels=channels, first_conv_init='image')
  backbone = model.build_model(cfg).get_layer('backbone')
  kernel = model.first_conv(backbone).kernel.numpy()
  expected = model.first_conv(reference).kernel.numpy()
  if channels == 1:
    expected = expected.sum(axis=2, keepdims=True)
  np.testing.assert_array_equal(kernel[:, :, :channels], expected)
  assert not kernel[:, :, channels:].any() and kernel.shape[2] == channels + 3
  assert model.load_pretrained(backbone, cfg) == []
  inputs = _inputs(cfg)
  image = inputs['image']
  features = backbone(np.concatenate([image, inputs['heatmaps']], -1),
                      training=False).numpy()
  rgb = image if channels == 3 else np.repeat(image, 3, axis=-1)
  np.testing.assert_allclose(features, reference(rgb, training=False).numpy(),
                             rtol=1e-4, atol=1e-5)


def test_set_trainable_groups():
  net = model.build_model(_cfg(landmark_pooling_bins=4))
  backbone = net.get_layer('backbone')

  def trainable_groups():
    groups = set()
    for layer in net.layers + backbone.layers:
      if layer is backbone or not layer.weights:
        continue
      if layer.trainable:
        groups.add(model.layer_group(layer, backbone))
    return groups

  model.set_trainable(net, ['first_conv', 'classifier'])
  assert trainable_groups() == {'first_conv', 'classifier'}
  assert len(net.trainable_variables) == 2   # conv kernel, classifier kernel
  model.set_trainable(net, ['all'], frozen=['reconstruction'])
  assert trainable_groups() == set(model.GROUPS) - {'reconstruction'}
  model.set_trainable(net, ['reconstruction'])
  assert trainable_groups() == {'reconstruction'}
  with pytest.raises(ValueError, match='unknown layer groups'):
    model.set_trainable(net, ['head'])


def test_landmark_pooling_sums_image_features_per_position_bin():
  cfg = _cfg(landmark_pooling_bins=5, landmark_pooling_channels=6)
  net = model.build_model(cfg)
  pooled = keras.Model(net.inputs,
                       net.get_layer('landmark_pooling_mean').output)
  features = keras.Model(net.inputs,
                         net.get_layer('landmark_pooling_relu1').output)
  bins = keras.Model(net.inputs,
                     net.get_layer('landmark_pooling_assign').output)
  inputs = _inputs(cfg)
  f, b = features(inputs).numpy(), bins(inputs).numpy()
  assert f.shape == (2, 16, 16, 6) and b.shape == (2, 16, 16, 5)
  np.testing.assert_allclose(b.sum(-1), 1, rtol=1e-5)   # soft assignment
  # Reference: mean over pixels of feature x bin membership, [c, n] flattened.
  expected = np.einsum('bhwc,bhwn->bcn', f, b).reshape(2, -1) / (16 * 16)
  np.testing.assert_allclose(pooled(inputs).numpy(), expected, rtol=1e-4,
                             atol=1e-6)
  # Joined to the GAP features (MobileNetV2's 1280) before the embedding.
  assert net.get_layer('embedding').kernel.shape[0] == 1280 + 6 * 5
  assert net(inputs)['embedding'].shape == (2, 16)


def test_landmark_pooling_needs_heatmaps_and_an_even_size():
  net = model.build_model(_cfg(num_landmarks=0, landmark_pooling_bins=4))
  assert not [l for l in net.layers if l.name.startswith('landmark_pooling')]
  with pytest.raises(ValueError, match='even image_size'):
    model.build_model(_cfg(image_size=33, landmark_pooling_bins=4))


@pytest.mark.parametrize('bins', [0, 4])
def test_keras_file_round_trip(tmp_path, bins):
  cfg = _cfg(landmark_pooling_bins=bins)
  embedder = model.embedding_model(model.build_model(cfg))
  path = str(tmp_path / 'm.keras')
  embedder.save(path)
  loaded = keras.saving.load_model(path)
  inputs = _inputs(cfg)
  np.testing.assert_allclose(loaded(inputs)['embedding'],
                             embedder(inputs)['embedding'], atol=1e-6)


def test_unknown_backbone():
  with pytest.raises(ValueError, match='unknown backbone'):
    model.build_model(_cfg(backbone='vgg'))


def test_fused_batch_norm_matches_keras(tmp_path):
  import tensorflow as tf
  from lmid_tf.speed import fused_batch_norm
  x = tf.Variable(np.random.default_rng(1).random((4, 8, 8, 5)) * 3,
                  dtype=tf.float32)
  keras_bn = keras.layers.BatchNormalization(momentum=0.9)
  fused_bn = keras.layers.BatchNormalization(momentum=0.9)
  keras_bn.build(x.shape)
  fused_bn.build(x.shape)
  fused_bn.set_weights(keras_bn.get_weights())
  fused_bn.__class__ = fused_batch_norm.FusedBatchNormalization
  with tf.GradientTape(persistent=True) as tape:
    outputs = [bn(x, training=True) for bn in (keras_bn, fused_bn)]
    losses = [tf.reduce_sum(y ** 2) for y in outputs]
  np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
  np.testing.assert_allclose(tape.gradient(losses[0], x),
                             tape.gradient(losses[1], x), atol=1e-4)
  np.testing.assert_allclose(keras_bn.moving_mean, fused_bn.moving_mean,
                             atol=1e-6)
  np.testing.assert_allclose(keras_bn.moving_variance,
                             fused_bn.moving_variance, rtol=1e-5)
  np.testing.assert_allclose(keras_bn(x), fused_bn(x), atol=1e-4)

  net = model.build_model(_cfg())
  before = net(_inputs(_cfg()))['embedding']
  fused_batch_norm.fuse(net)
  kinds = {type(layer).__name__ for layer in net.get_layer('backbone').layers}
  assert 'FusedBatchNormalization' in kinds and (
      'BatchNormalization' not in kinds)
  np.testing.assert_allclose(net(_inputs(_cfg()))['embedding'], before,
                             atol=1e-4)
  net.save(tmp_path / 'fused.keras')
  again = keras.saving.load_model(tmp_path / 'fused.keras')
  np.testing.assert_allclose(again(_inputs(_cfg()))['embedding'], before,
                             atol=1e-4)


def _random_statistics(net, seed=0):
  """Batch norms far from identity, so that a wrong fold shows."""
  rng = np.random.default_rng(seed)
  for bn in model.batch_norms(net):
    shape = bn.moving_mean.shape
    bn.moving_mean.assign(rng.normal(0, 0.5, shape))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    if bn.scale:
      bn.gamma.assign(rng.uniform(0.5, 1.5, shape))
    if bn.center:
      bn.beta.assign(rng.normal(0, 0.3, shape))


@pytest.mark.parametrize('backbone', ['mobilenet_v2_0.35', 'small_cnn'])
def test_folding_batch_norms_keeps_the_function(backbone):
  from lmid_tf.speed import fold_batch_norm
  cfg = _cfg(backbone=backbone)
  net = model.build_model(cfg)
  _random_statistics(net)
  before = net(_inputs(cfg), training=False)
  norms = len(list(model.batch_norms(net)))
  folded = fold_batch_norm.fold(net)
  # Every batch norm after a convolution; the BNNeck follows a Dense layer.
  assert 0 < folded < norms
  after = net(_inputs(cfg), training=False)
  for name in ('embedding', 'logits'):
    np.testing.assert_allclose(after[name], before[name], atol=1e-5)
  assert fold_batch_norm.fold(net) == 0, 'folded twice'


def test_a_convolution_with_two_consumers_is_not_folded():
  from lmid_tf.speed import fold_batch_norm
  image = keras.Input((8, 8, 2))
  conv = keras.layers.Conv2D(4, 3, padding='same')(image)
  norm = keras.layers.BatchNormalization()(conv)
  net = keras.Model(image, keras.layers.Add()([norm, conv]))
  _random_statistics(net)
  x = np.random.default_rng(2).random((1, 8, 8, 2)).astype('float32')
  before = net(x)
  assert fold_batch_norm.fold(net) == 0
  np.testing.assert_allclose(net(x), before, atol=1e-6)

"""The Landmark-Id network (paper Fig. 2, §3.2, §4.3) and its baseline.

  image [S,S,C] --+
                  +-- concat --> backbone --> GAP --> Dense(256) = embedding
  heatmaps [S,S,k]+                                      |
                                    BNNeck (BatchNorm) --+--> logits (no bias)
                                                         |
       embedding --> Dense --> 8x8 --> 3 x (upsample x2, conv3x3, BN, ReLU)
                 --> conv1x1 --> k sigmoid heatmaps [64,64,k]   (reconstruction)

The baseline is the same network with k = 0 and no reconstruction head.

Optional, beyond the paper (`landmark_pooling_bins` > 0): a second, shallow
use of the heatmaps. Low-level image features are pooled by where they sit
relative to the landmarks -- each pixel is softly assigned to one of n
position bins computed from the heatmaps, and the features are summed per bin
(a bilinear pooling, [c x n]) -- and the result joins the GAP features. With
heatmaps that fall off with distance (preprocess `falloff`), the bins are
regions of the body frame, so the pooled features say which marks lie where
on the body, whatever the rotation of the photo; that is the relation a
backbone trained from scratch does not find on its own (docs/RESULTS.md).
"""

import dataclasses
import os

import keras
import numpy as np

def small_cnn(include_top=False, weights=None, input_shape=None,
              name='small_cnn', widths=(32, 64, 128, 256)) -> keras.Model:
  """Four blocks of two 3x3 conv + BN + ReLU and a 2x2 max-pool.

  A backbone that trains from random weights in minutes on a CPU, for
  aligned inputs at 64 px (docs/RESULTS.md); it has no ImageNet weights.
  The signature is keras.applications', so it slots into BACKBONES.
  """
  del include_top
  if weights == 'imagenet':
    raise ValueError('--backbone=small_cnn has no ImageNet weights: use '
                     '--init=none or --init=/path/to/small_cnn.weights.h5')
  inputs = keras.Input(input_shape)
  x = inputs
  for block, width in enumerate(widths):
    for j in range(2):
      x = keras.layers.Conv2D(width, 3, padding='same', use_bias=False,
                              name=f'block{block}_conv{j}')(x)
      x = keras.layers.BatchNormalization(name=f'block{block}_bn{j}')(x)
      x = keras.layers.ReLU(name=f'block{block}_relu{j}')(x)
    x = keras.layers.MaxPooling2D(2, name=f'block{block}_pool')(x)
  model = keras.Model(inputs, x, name=name)
  if weights:
    model.load_weights(weights)
  return model


# Backbones: name -> (constructor with keras.applications' signature, kwargs).
BACKBONES = {
    'resnet50': (keras.applications.ResNet50, {}),
    'resnet101': (keras.applications.ResNet101, {}),
    'mobilenet_v2': (keras.applications.MobileNetV2, {}),
    'mobilenet_v2_0.35': (keras.applications.MobileNetV2, {'alpha': 0.35}),
    'small_cnn': (small_cnn, {}),
}

# Layer groups that a training phase can make trainable (see schedule.py).
GROUPS = ('first_conv', 'backbone', 'embedding', 'classifier',
          'reconstruction', 'landmark_pooling')
RECONSTRUCTION_PREFIX = 'reconstruction'
LANDMARK_POOLING_PREFIX = 'landmark_pooling'


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Built by config.build from the experiment's Settings (defaults there)."""
  num_classes: int
  image_size: int
  channels: int                    # 1 grayscale, 3 colour
  num_landmarks: int               # k; 0 builds the baseline
  backbone: str
  embedding_dim: int
  reconstruction: bool             # add the heatmap reconstruction head
  reconstruction_size: int
  init: str                        # 'imagenet', 'none' or a weights file
  landmark_pooling_bins: int       # n > 0 adds the landmark pooling branch
  # 'random' (the paper) or 'image': with pretrained weights, the first
  # conv's image channels take the pretrained filters and its heatmap
  # channels start at zero (FIRST_CONV_INITS, widen_first_conv).
  first_conv_init: str
  # Architecture constants, not experiment settings.
  bn_momentum: float = 0.9         # of every BatchNormalization's statistics
  landmark_pooling_channels: int = 16


def _backbone(cfg: ModelConfig, channels: int, weights, name='backbone'):
  if cfg.backbone not in BACKBONES:
    raise ValueError(f'unknown backbone {cfg.backbone!r}; choose from '
                     f'{sorted(BACKBONES)}')
  constructor, kwargs = BACKBONES[cfg.backbone]
  return constructor(include_top=False, weights=weights,
                     input_shape=(cfg.image_size, cfg.image_size, channels),
                     name=name, **kwargs)


def first_conv(backbone: keras.Model) -> keras.layers.Layer:
  return next(layer for layer in backbone.layers
              if isinstance(layer, keras.layers.Conv2D))


def _reference_backbone(cfg: ModelConfig) -> keras.Model:
  """The 3-channel backbone holding cfg.init's weights; ValueError saying
  what to do when they cannot be had."""
  if cfg.init != 'imagenet':
    if not os.path.isfile(cfg.init):
      raise ValueError(f'--init={cfg.init}: no such file (use imagenet, none '
                       f'or a {cfg.backbone} .h5/.weights.h5 file)')
    try:
      return _backbone(cfg, 3, cfg.init, name='reference')
    except (ValueError, OSError, KeyError) as e:
      raise ValueError(
          f'--init={cfg.init}: not {cfg.backbone} weights with 3 input '
          f'channels ({str(e).splitlines()[0][:200]}); keras.applications '
          'weights of the same --backbone, without the top, fit.') from None
  if cfg.backbone == 'small_cnn':
    return _backbone(cfg, 3, 'imagenet')    # raises: it has no such weights
  try:
    return _backbone(cfg, 3, 'imagenet', name='reference')
  except Exception as e:  # keras raises a bare Exception on a failed fetch
    if 'URL fetch failure' not in str(e) and not isinstance(e, OSError):
      raise
    cache = os.path.join(os.path.expanduser('~'), '.keras', 'models')
    raise ValueError(
        f'--init=imagenet: the ImageNet weights of {cfg.backbone} could not '
        f'be downloaded ({str(e).splitlines()[0][:160]}). Offline, use '
        '--init=none (random start, see configs/synthetic_cpu.flags), '
        f'--init=/path/to/{cfg.backbone}.h5 (keras.applications weights '
        'without the top), or copy the file keras downloads into '
        f'{cache}/ on this machine.') from None


FIRST_CONV_INITS = ('random', 'image')


def load_pretrained(backbone: keras.Model, cfg: ModelConfig) -> list:
  """Copies pretrained weights into `backbone` by layer name.

  The reference network is the same architecture with 3 input channels,
  loaded from `cfg.init` ('imagenet' downloads as keras.applications does; a
  path loads that file). Layers whose weight shapes differ -- the first conv,
  which takes C + k channels -- keep their random initialisation.

  Returns:
    Names of the layers that were not copied.
  """
  if cfg.init == 'none':
    return [layer.name for layer in backbone.layers if layer.weights]
  reference = _reference_backbone(cfg)
  skipped = copy_weights_by_name(reference, backbone)
  conv = first_conv(backbone)
  if cfg.first_conv_init == 'image' and conv.name in skipped:
    widen_first_conv(first_conv(reference), conv, cfg.channels)
    skipped.remove(conv.name)
  return skipped


def widen_first_conv(source: keras.layers.Layer, target: keras.layers.Layer,
                     channels: int) -> None:
  """Sets `target` (a conv over `channels` image channels followed by
  heatmap channels) to the 3-channel `source`'s filters on the image
  channels (summed over RGB for grayscale) and zero on the heatmaps: the
  network then starts as the pretrained image-only one, and the heatmaps'
  filters grow from there (their gradients do not vanish at zero)."""
  weights = source.get_weights()
  kernel = weights[0]
  if channels == 1:
    kernel = kernel.sum(axis=2, keepdims=True)
  elif channels != kernel.shape[2]:
    raise ValueError(f'--first_conv_init=image: {channels} image channels, '
                     f'but the pretrained first conv takes {kernel.shape[2]}')
  wide = np.zeros(target.kernel.shape, dtype=kernel.dtype)
  wide[:, :, :channels] = kernel
  target.set_weights([wide] + weights[1:])


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> list:
  """Sets each of `target`'s layers to the weights of `source`'s layer of the
  same name and shapes. Returns the names of the target layers left as they
  were (no such layer in `source`, or other shapes)."""
  skipped = []
  for layer in target.layers:
    if not layer.weights:
      continue
    try:
      weights = source.get_layer(layer.name).get_weights()
    except ValueError:
      skipped.append(layer.name)
      continue
    if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
      skipped.append(layer.name)
      continue
    layer.set_weights(weights)
  return skipped


def _reconstruction_head(embedding, cfg: ModelConfig):
  base = 8
  blocks = 0
  size = base
  while size < cfg.reconstruction_size:
    size *= 2
    blocks += 1
  if size != cfg.reconstruction_size:
    raise ValueError('reconstruction_size must be 8 * 2**n, got '
                     f'{cfg.reconstruction_size}')
  name = RECONSTRUCTION_PREFIX
  x = keras.layers.Dense(base * base * 128, name=f'{name}_dense')(embedding)
  x = keras.layers.Reshape((base, base, 128), name=f'{name}_reshape')(x)
  for i, filters in enumerate([128, 64, 32, 32, 32][:blocks]):
    x = keras.layers.UpSampling2D(2, interpolation='bilinear',
                                  name=f'{name}_up{i}')(x)
    x = keras.layers.Conv2D(filters, 3, padding='same', use_bias=False,
                            name=f'{name}_conv{i}')(x)
    x = keras.layers.BatchNormalization(momentum=cfg.bn_momentum,
                                        name=f'{name}_bn{i}')(x)
    x = keras.layers.ReLU(name=f'{name}_relu{i}')(x)
  return keras.layers.Conv2D(cfg.num_landmarks, 1, activation='sigmoid',
                             dtype='float32', name=f'{name}_output')(x)


def _landmark_pooling(image, maps, cfg: ModelConfig):
  """[B, S, S, C] image, [B, S, S, k] heatmaps -> [B, c * n] pooled features.

  Runs at half resolution: two 3x3 convs find marks in the image (c
  channels); two 1x1 convs turn each pixel's heatmap values into a soft
  assignment to n position bins; then the mean over pixels of feature x bin.
  """
  name = LANDMARK_POOLING_PREFIX
  c, n = cfg.landmark_pooling_channels, cfg.landmark_pooling_bins
  if cfg.image_size % 2:
    raise ValueError('landmark pooling needs an even image_size, got '
                     f'{cfg.image_size}')
  side = cfg.image_size // 2
  x = image
  for i, stride in enumerate((2, 1)):
    x = keras.layers.Conv2D(c, 3, strides=stride, padding='same',
                            use_bias=False, name=f'{name}_conv{i}')(x)
    x = keras.layers.BatchNormalization(momentum=cfg.bn_momentum,
                                        name=f'{name}_bn{i}')(x)
    x = keras.layers.ReLU(name=f'{name}_relu{i}')(x)
  where = keras.layers.AveragePooling2D(2, name=f'{name}_downsample')(maps)
  where = keras.layers.Conv2D(4 * n, 1, activation='relu',
                              name=f'{name}_position')(where)
  where = keras.layers.Conv2D(n, 1, name=f'{name}_bins')(where)
  where = keras.layers.Softmax(name=f'{name}_assign')(where)
  x = keras.layers.Reshape((side * side, c), name=f'{name}_flat_features')(x)
  where = keras.layers.Reshape((side * side, n), name=f'{name}_flat_bins')(where)
  # [B, c, n]: sum over pixels of feature x bin membership.
  pooled = keras.layers.Dot(axes=1, name=f'{name}_bilinear')([x, where])
  pooled = keras.layers.Flatten(name=f'{name}_flatten')(pooled)
  pooled = keras.layers.Rescaling(1.0 / (side * side),
                                  name=f'{name}_mean')(pooled)
  return keras.layers.BatchNormalization(momentum=cfg.bn_momentum,
                                         name=f'{name}_norm')(pooled)


def build_model(cfg: ModelConfig) -> keras.Model:
  """Builds the training network.

  Inputs: 'image' [B, S, S, C] normalised; 'heatmaps' [B, S, S, k] (k > 0).
  Outputs: 'embedding' [B, D] (triplet and center losses), 'logits'
  [B, num_classes] (ID loss), 'heatmaps' [B, 64, 64, k] (reconstruction,
  when k > 0 and cfg.reconstruction).
  """
  k = cfg.num_landmarks
  image = keras.Input((cfg.image_size, cfg.image_size, cfg.channels),
                      name='image')
  inputs = {'image': image}
  x = image
  if k:
    maps = keras.Input((cfg.image_size, cfg.image_size, k), name='heatmaps')
    inputs['heatmaps'] = maps
    x = keras.layers.Concatenate(name='image_and_heatmaps')([image, maps])
  # The first conv sees C + k channels, so it cannot take ImageNet weights
  # as they are: it is randomly initialised (the paper), or widened from
  # them (--first_conv_init=image); the rest of the backbone is pretrained.
  backbone = _backbone(cfg, cfg.channels + k, None)
  load_pretrained(backbone, cfg)
  # keras.applications use 0.99-0.999, tuned for ImageNet-length training; on
  # a few thousand steps the inference statistics would lag far behind (with
  # 0.999 every embedding comes out the same).
  for layer in backbone.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = cfg.bn_momentum
  features = backbone(x)
  pooled = keras.layers.GlobalAveragePooling2D(name='gap')(features)
  if k and cfg.landmark_pooling_bins:
    pooled = keras.layers.Concatenate(name='gap_and_landmark_pooling')(
        [pooled, _landmark_pooling(image, maps, cfg)])
  embedding = keras.layers.Dense(cfg.embedding_dim, dtype='float32',
                                 name='embedding')(pooled)
  # BNNeck: the ID loss sees batch-normalised features, the metric losses the
  # raw ones; the two objectives then do not pull one space two ways.
  neck = keras.layers.BatchNormalization(
      center=False, momentum=cfg.bn_momentum, dtype='float32',
      name='bnneck')(embedding)
  logits = keras.layers.Dense(cfg.num_classes, use_bias=False, dtype='float32',
                              name='logits')(neck)
  outputs = {'embedding': embedding, 'logits': logits}
  if k and cfg.reconstruction:
    outputs['heatmaps'] = _reconstruction_head(embedding, cfg)
  return keras.Model(inputs, outputs, name='landmark_id' if k else 'baseline')


def embedding_model(net: keras.Model) -> keras.Model:
  """The inference sub-model: inputs as `net`, output 'embedding' [B, D].

  Shares weights with `net`. The retrieval feature is the BNNeck output,
  L2-normalised, so Euclidean distance ranks as cosine distance does.
  """
  neck = net.get_layer('bnneck').output
  normalised = keras.layers.UnitNormalization(dtype='float32',
                                              name='normalised')(neck)
  return keras.Model(net.inputs, {'embedding': normalised},
                     name=f'{net.name}_embedding')


def layer_group(layer: keras.layers.Layer, backbone: keras.Model) -> str:
  """Which of GROUPS a leaf layer belongs to ('' for weightless glue)."""
  if layer is first_conv(backbone):
    return 'first_conv'
  if layer.name.startswith(RECONSTRUCTION_PREFIX):
    return 'reconstruction'
  if layer.name.startswith(LANDMARK_POOLING_PREFIX):
    return 'landmark_pooling'
  if layer.name in ('embedding', 'bnneck'):
    return 'embedding'
  if layer.name == 'logits':
    return 'classifier'
  return 'backbone'


def leaf_layers(net: keras.Model):
  """Every layer of `net` that is not itself a model, nested models
  included."""
  for layer in net.layers:
    if isinstance(layer, keras.Model):
      yield from leaf_layers(layer)
    else:
      yield layer


def swap_layer_class(net: keras.Model, old: type, new: type) -> int:
  """Gives every layer of `net` (nested models included) whose class is
  exactly `old` the class `new`, in place; returns how many. For speed
  variants of a layer (lmid_tf/speed/): same attributes and variables,
  another call, so swapping the class is enough, and swapping it back
  before saving keeps saved models plain Keras."""
  swapped = 0
  for layer in leaf_layers(net):
    if type(layer) is old:
      layer.__class__ = new
      swapped += 1
  return swapped


def batch_norms(net: keras.Model):
  """Every BatchNormalization layer of `net`, nested models included."""
  return (layer for layer in leaf_layers(net)
          if isinstance(layer, keras.layers.BatchNormalization))


def synchronize_batch_norm(net: keras.Model) -> None:
  """Makes every batch norm use the statistics of the global batch.

  Split over replicas, each replica would normalise by its own share of the
  batch and move its own running averages, so the replicas' weights would
  drift apart and differ from a single-device run. Takes effect when the
  training step is traced.
  """
  for layer in batch_norms(net):
    layer.synchronized = True


def set_trainable(net: keras.Model, groups, frozen=()) -> None:
  """Makes exactly the layers of `groups` (or 'all') trainable.

  Groups in `frozen` stay frozen even under 'all'.

  Containers stay trainable so that the flags of their leaves decide; a
  frozen BatchNormalization also runs in inference mode (Keras 3).
  """
  groups = set(GROUPS) if 'all' in groups else set(groups)
  unknown = (groups | set(frozen)) - set(GROUPS)
  if unknown:
    raise ValueError(f'unknown layer groups {sorted(unknown)}; choose from '
                     f'{GROUPS} or all')
  groups -= set(frozen)
  backbone = net.get_layer('backbone')
  net.trainable = True
  for layer in net.layers:
    if layer is backbone:
      for inner in backbone.layers:
        inner.trainable = layer_group(inner, backbone) in groups
    else:
      layer.trainable = layer_group(layer, backbone) in groups

"""tf.data input pipelines for training (P x K batches) and evaluation.

Reading and decoding happen per example; every random per-sample operation
(geometry, NLA, MLA) and heatmap rendering runs on whole batches after
`.batch()`, as TensorFlow ops only, so the same graph runs on a GPU.

Training holds the train split's *encoded* records in memory to sample
identities at random (ecological datasets are thousands of images, a few
hundred MB at most); images are decoded only when sampled.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from lmid_tf.data import augment
from lmid_tf.data import heatmaps
from lmid_tf.data import preprocess
from lmid_tf.data import records


@dataclasses.dataclass(frozen=True)
class TrainInputConfig:
  """Built by config.input_config (defaults there)."""
  identities_per_batch: int         # P
  images_per_identity: int          # K
  augmentation: augment.AugmentConfig
  nla: bool
  nla_strength: float               # fraction of the blob radius
  mla: bool
  mla_min_visible: int              # M
  mla_probability: float            # p
  seed: int


def _parse_and_decode(serialized, pre: preprocess.PreprocessConfig,
                      num_landmarks: int):
  example = records.parse(serialized, num_landmarks)
  image, _ = preprocess.decode(example['encoded'], pre)
  example['image'] = image
  del example['encoded']
  return example


def _select_landmarks(example, pre: preprocess.PreprocessConfig):
  """The baseline model sees no landmarks: keep zero columns for it."""
  if not pre.num_landmarks:
    batch = tf.shape(example['landmarks'])[0]
    example['landmarks'] = tf.zeros([batch, 0, 2])
    example['visible'] = tf.zeros([batch, 0])
  return example


def load_train_records(data_dir: str) -> tuple:
  """Returns (metadata, serialized records [N] numpy, labels [N] int)."""
  metadata, serialized = records.read_split(data_dir, 'train')
  if not serialized:
    raise ValueError(f'{data_dir}: the train split is empty')
  serialized = np.array(serialized, dtype=object)
  labels = tf.data.Dataset.from_tensor_slices(serialized).batch(4096).map(
      lambda s: records.parse(s, metadata.num_landmarks)['label'])
  labels = np.concatenate(list(labels.as_numpy_iterator()))
  return metadata, serialized, labels


def pk_indices(step, labels_sorted_order, starts, counts, p, k, seed):
  """Record indices of one P x K batch, as TensorFlow ops.

  P distinct identities, K images each: without replacement when an identity
  has at least K images, with replacement otherwise.

  Args:
    step: [] int64 batch number (with `seed`, fixes the random draw).
    labels_sorted_order: [N] record indices sorted by identity.
    starts, counts: [I] first position in that order and image count per
      identity.

  Returns:
    [P * K] int64 record indices, identity-major.
  """
  seeds = tf.random.experimental.stateless_split(
      tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)]), 3)
  num_ids = tf.shape(counts)[0]
  chosen = tf.argsort(tf.random.stateless_uniform([num_ids], seeds[0]))[:p]
  count = tf.gather(counts, chosen)                          # [P]
  width = tf.maximum(tf.reduce_max(counts), k)
  keys = tf.random.stateless_uniform([p, width], seeds[1])
  keys = tf.where(tf.range(width)[None, :] < count[:, None], keys, 2.0)
  without = tf.argsort(keys, axis=1)[:, :k]
  with_repl = tf.cast(tf.floor(tf.random.stateless_uniform([p, k], seeds[2])
                               * tf.cast(count[:, None], tf.float32)), tf.int32)
  position = tf.where(count[:, None] >= k, without, with_repl)
  flat = tf.gather(starts, chosen)[:, None] + position
  return tf.gather(labels_sorted_order, tf.reshape(flat, [-1]))


def train_dataset(data_dir: str, pre: preprocess.PreprocessConfig,
                  cfg: TrainInputConfig, loaded=None,
                  start_step: int = 0, num_replicas: int = 1,
                  replicas: tuple = (0,)) -> tf.data.Dataset:
  """Infinite dataset of augmented P x K batches.

  Batch n is a pure function of (cfg.seed, n); `start_step` starts at batch
  n, so a resumed or later phase continues the sequence instead of
  replaying it.

  Split over `num_replicas` replicas, each element is one replica's share
  of batch n: P / num_replicas whole identities with their K images (the
  triplet loss compares images of one identity, so an identity never
  straddles two replicas). `replicas` are the replicas this input pipeline
  feeds, in the order the strategy hands them elements.

  Yields:
    (inputs, targets): inputs {'image', 'heatmaps'?}; targets {'label': [B]
    int32, 'heatmaps': [B, R, R, K] reconstruction target (Landmark-Id),
    'landmarks': [B, K, 2], 'visible': [B, K] after augmentation, before
    NLA/MLA}.
  """
  metadata, serialized, labels = loaded or load_train_records(data_dir)
  num_ids = len(np.unique(labels))
  p, k = cfg.identities_per_batch, cfg.images_per_identity
  if p % num_replicas:
    raise ValueError(
        f'identities_per_batch={p} does not split into {num_replicas} '
        'replicas of whole identities (each identity\'s K images must stay '
        f'on one replica for the triplet loss); use a multiple of '
        f'{num_replicas}')
  share = p // num_replicas
  if num_ids < p:
    raise ValueError(f'{data_dir}: train split has {num_ids} identities, fewer '
                     f'than identities_per_batch={p}')
  order = np.argsort(labels, kind='stable')
  _, starts, counts = np.unique(labels[order], return_index=True,
                                return_counts=True)
  order, starts, counts = (tf.constant(order, tf.int64),
                           tf.constant(starts, tf.int32),
                           tf.constant(counts, tf.int32))
  serialized = tf.constant(serialized.tolist(), tf.string)
  num_landmarks = metadata.num_landmarks

  def sample(step):
    indices = pk_indices(step, order, starts, counts, p, k, cfg.seed)
    # Identity-major, so row r holds replica r's whole identities.
    mine = tf.gather(tf.reshape(indices, [num_replicas, share * k]),
                     list(replicas))
    replica = tf.repeat(tf.constant(replicas, tf.int64), share * k)
    return tf.data.Dataset.from_tensor_slices(
        (tf.gather(serialized, tf.reshape(mine, [-1])),
         tf.fill([len(replicas) * share * k], step), replica))

  def decode(record, step, replica):
    example = _parse_and_decode(record, pre, num_landmarks)
    return example, step, replica

  def batch_ops(example, step, replica):
    example = _select_landmarks(example, pre)
    # One replica's draws differ from another's; with one replica the
    # stream is the single-device one.
    seed = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(cfg.seed + 1, tf.int64),
                  step[0] * num_replicas + replica[0]]), 3)
    images, landmarks, visible = augment.augment_batch(
        example['image'], example['landmarks'], example['visible'],
        cfg.augmentation, seed[0])
    # The true (augmented) landmarks, before NLA/MLA: a landmark predictor's
    # targets.
    targets = {'label': example['label'], 'landmarks': landmarks,
               'visible': visible}
    if pre.num_landmarks and cfg.mla:
      visible = heatmaps.missing_landmarks(visible, cfg.mla_min_visible,
                                           cfg.mla_probability, seed[1])
    if pre.num_landmarks and cfg.nla:
      landmarks = heatmaps.noisy_landmarks(landmarks, pre.radius,
                                           cfg.nla_strength, seed[2])
    inputs = preprocess.model_inputs(images, landmarks, visible, pre,
                                     with_target=True)
    if 'target_heatmaps' in inputs:
      targets['heatmaps'] = inputs.pop('target_heatmaps')
    return inputs, targets

  options = tf.data.Options()
  options.deterministic = True
  return (tf.data.Dataset.counter(start_step)
          .flat_map(sample)
          .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(share * k, drop_remainder=True)
          .map(batch_ops, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE)
          .with_options(options))


@dataclasses.dataclass(frozen=True)
class Perturbation:
  """The paper's robustness protocol (§4.2, Tables 3 and 4), for evaluation:
  applied to every gallery and query image, seeded per image."""
  displacement: float   # landmarks moved within a disk of this radius
  hidden: int           # landmarks hidden per image
  seed: int

  def __bool__(self):
    return bool(self.displacement or self.hidden)


def perturb(landmarks, visible, perturbation: Perturbation, split: str,
            index):
  """[K, 2], [K] of the image at `index` of `split` -> perturbed copies.

  The draw depends only on (seed, split, index), not on batching."""
  seeds = tf.random.experimental.stateless_split(tf.stack([
      tf.constant(perturbation.seed, tf.int64),
      tf.cast(index, tf.int64) * len(records.SPLITS)
      + records.SPLITS.index(split)]), 2)
  landmarks = heatmaps.displaced_landmarks(
      landmarks[None], perturbation.displacement, seeds[0])[0]
  visible = heatmaps.hidden_landmarks(visible[None], perturbation.hidden,
                                      seeds[1])[0]
  return tf.where(visible[:, None] > 0, landmarks, 0.0), visible


def eval_dataset(data_dir: str, split: str, pre: preprocess.PreprocessConfig,
                 batch_size: int = 64,
                 perturbation: Perturbation = None) -> tf.data.Dataset:
  """Fixed-order, unaugmented batches of one split.

  With a `perturbation`, landmarks are displaced / hidden before the model
  inputs are made (the 'landmarks' and 'visible' keys then hold the
  perturbed ones).

  Yields dicts: 'image', 'heatmaps'? (model inputs), 'label' [B] int32,
  'index' [B] int64 (position in the split), 'name', 'path', 'viewpoint'
  [B] string,
  'raw_image' [B, S, S, C] in [0, 1], 'landmarks' [B, K, 2], 'visible' [B, K].
  """
  metadata, serialized = records.read_split(data_dir, split)
  if not serialized:
    raise ValueError(f'{data_dir}: the {split} split is empty')
  if pre.num_landmarks and pre.num_landmarks != metadata.num_landmarks:
    raise ValueError(
        f'{data_dir}/{records.METADATA_FILE} has {metadata.num_landmarks} '
        f'landmarks {list(metadata.landmark_names)}, the model expects '
        f'{pre.num_landmarks} {list(pre.landmark_names or ())}: evaluate it '
        'on data annotated with its landmark set')

  def to_inputs(example):
    example = _select_landmarks(example, pre)
    out = preprocess.model_inputs(example['image'], example['landmarks'],
                                  example['visible'], pre)
    out['raw_image'] = example['image']
    for key in ('label', 'index', 'name', 'path', 'viewpoint', 'landmarks',
                'visible'):
      out[key] = example[key]
    return out

  def with_index(index, serialized):
    example = _parse_and_decode(serialized, pre, metadata.num_landmarks)
    example['index'] = index
    if perturbation:
      example['landmarks'], example['visible'] = perturb(
          example['landmarks'], example['visible'], perturbation, split,
          index)
    return example

  # Held in memory as read, so a corrupt shard is named before any work.
  return (tf.data.Dataset.from_tensor_slices(tf.constant(serialized, tf.string))
          .enumerate()
          .map(with_index, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size)
          .map(to_inputs)
          .prefetch(tf.data.AUTOTUNE))

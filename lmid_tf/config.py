"""Every experiment setting, declared once here with its one default.

`Settings` is the whole experiment as a flat list of named values: its
fields *are* the command-line flags of `lmid_tf.train` and `show_batch`, and a
flagfile in configs/ sets them for a whole experiment. `build` turns
Settings (plus the dataset's metadata) into the `TrainConfig` the trainer
runs, deriving what is not a choice (class count, channels, landmark count).
Tests and benchmarks build their configs the same way, so there is no second
copy of any default.

  settings = config.Settings(data='data/x', backbone='mobilenet_v2_0.35')
  cfg = config.build(settings)
"""

import dataclasses

from lmid_tf.data import alignment
from lmid_tf.data import augment
from lmid_tf.modeling import model
from lmid_tf.modeling import objective
from lmid_tf.data import pipeline
from lmid_tf.speed import conv_gradients as conv_gradients_lib
from lmid_tf.speed import precision as precision_lib
from lmid_tf.data import preprocess
from lmid_tf.data import records
from lmid_tf.training import schedule

VARIANTS = ('landmark_id', 'baseline')
DISTRIBUTIONS = ('default', 'mirrored', 'multi_worker')


def _setting(default, help_text, choices=None):
  return dataclasses.field(default=default,
                           metadata={'help': help_text, 'choices': choices})


@dataclasses.dataclass(frozen=True)
class Settings:
  """One field per flag; the defaults are the project's defaults."""
  data: str = _setting('', 'Dataset folder from data_tools.convert.')
  run_dir: str = _setting('', 'Output folder; rerun to resume.')
  variant: str = _setting(
      'landmark_id', 'landmark_id (image + heatmaps) or baseline (image '
      'only).', VARIANTS)
  backbone: str = _setting('resnet50', 'keras.applications backbone.',
                           tuple(sorted(model.BACKBONES)))
  init: str = _setting('imagenet', "Backbone weights: 'imagenet' "
                       "(downloads), 'none' (random), or a .h5/.weights.h5 "
                       'path.')
  first_conv_init: str = _setting(
      'random', "With pretrained --init: the first conv, which takes the "
      "image and heatmap channels, starts random ('random', the paper's "
      "choice) or with the pretrained filters on the image channels and "
      "zeros on the heatmap channels ('image': the network starts as the "
      'pretrained image-only one).', model.FIRST_CONV_INITS)
  image_size: int = _setting(128, 'Model input side in pixels.')
  embedding_dim: int = _setting(256, 'Embedding size.')
  reconstruction_size: int = _setting(
      64, 'Side of the reconstructed heatmaps (8 * 2**n).')
  heatmap_radius: float = _setting(0.05, 'Heatmap blob radius, fraction of '
                                   'the image size.')
  heatmap_falloff: float = _setting(
      0.0, "Linear ramp to 0 beyond the blob, fraction of the image size "
      "(0: the paper's disk).")
  heatmap_channels: bool = _setting(
      True, 'Landmark-Id: feed the heatmaps to the network beside the image. '
      'With --noheatmap_channels and --align the landmarks only align the '
      'image (the "alignment alone" comparison).')
  align: bool = _setting(
      False, 'Warp every image so that its landmarks sit on the template '
      '(the Procrustes mean shape of the train split): affine with >= 3 '
      'visible landmarks, similarity with 2; heatmaps are rendered in the '
      'aligned frame (alignment.py).')
  alignment: str = _setting(
      'affine', 'With --align: affine (exact with 3 landmarks), similarity '
      '(rotation, scale, shift; leaves the residual shape in the heatmaps) '
      'or tps (a thin-plate spline through >= 4 visible landmarks, which '
      'undoes a bend; affine with 3, similarity with 2).',
      alignment.KINDS)
  landmark_pooling_bins: int = _setting(
      0, 'Landmark-Id: > 0 adds the landmark pooling branch with this many '
      'position bins (model.py; use with --heatmap_falloff).')
  identities_per_batch: int = _setting(16, 'P of the P x K batch.')
  images_per_identity: int = _setting(4, 'K of the P x K batch.')
  steps_per_epoch: int = _setting(0, '0: train images / batch size.')
  rotation: float = _setting(360.0, 'Max rotation in degrees.')
  zoom: float = _setting(0.2, 'Max zoom, fraction.')
  translation: float = _setting(0.2, 'Max translation, fraction of size.')
  brightness: float = _setting(0.0, 'Max brightness jitter ([0, 1] scale).')
  contrast: float = _setting(0.0, 'Max contrast jitter, fraction.')
  erase: float = _setting(
      0.0, 'Random erasing in training: on half the images a rectangle of '
      'up to this fraction of the area is filled with noise, like an '
      'occluder (0: off).')
  lighting: float = _setting(
      0.0, 'Uneven light in training: each image darkened along a random '
      'direction by up to this fraction (0: off).')
  nla: bool = _setting(True, 'Noisy landmark augmentation.')
  nla_strength: float = _setting(1.0, 'NLA offset, fraction of the radius.')
  mla: bool = _setting(True, 'Missing landmark augmentation.')
  mla_min_visible: int = _setting(2, 'MLA: minimum visible landmarks M.')
  mla_probability: float = _setting(0.5, 'MLA: hiding probability p.')
  label_smoothing: float = _setting(0.1, 'ID loss label smoothing.')
  triplet_margin: float = _setting(0.3, 'Triplet loss margin.')
  center_weight: float = _setting(5e-4, 'Center loss weight beta.')
  center_lr: float = _setting(0.5, 'SGD learning rate of the class centres.')
  heatmap_weight: float = _setting(1.0, 'Reconstruction loss weight alpha.')
  schedule: str = _setting(
      '', 'The training phases, in order, separated by ";": "name '
      'trains=g1,g2 lr=X epochs=N [reconstruct=1] [warmup_epochs=N] '
      '[decay_epochs=a,b]; name ...". One value: a later flagfile or the '
      'command line replaces the whole schedule. Groups: '
      + ', '.join(model.GROUPS) + ', all. The paper\'s schedules are '
      'configs/paper/schedule_{landmark_id,baseline}.flags.')
  eval_every: int = _setting(10, 'Evaluate every N epochs (0: at the end '
                             'only).')
  eval_batch_size: int = _setting(64, 'Evaluation batch size.')
  distribution: str = _setting('default', 'tf.distribute strategy '
                               '(multi_worker reads TF_CONFIG).',
                               DISTRIBUTIONS)
  precision: str = _setting(
      'auto', 'float32; mixed (bfloat16 on a CPU, float16 on a GPU); or auto: '
      'mixed bfloat16 on a CPU with bf16 instructions (avx512_bf16, AMX) for '
      'the backbones measured faster in it (small_cnn, ResNet), else float32 '
      '(lmid_tf/speed/precision.py). The saved model computes in float32.',
      precision_lib.PRECISIONS)
  fused_batch_norm: bool = _setting(
      True, 'Train batch norms with TensorFlow\'s fused kernel (same '
      'results, measured faster on every backbone: +13 % small_cnn, +20 % '
      'MobileNetV2-0.35, +16 % ResNet50 training steps on our CPU, '
      'docs/journal/2026-11-round1-2.md "Speed defaults"). The saved model '
      'keeps plain Keras layers.')
  conv_gradients: str = _setting(
      'auto', 'native: TensorFlow\'s convolution gradients; matmul: as '
      'matrix products where measured faster, with the biases before batch '
      'norms dropped (same results within bf16 rounding); auto: matmul when '
      'training in bfloat16 on a CPU with bf16 instructions (AMX, AVX-512 '
      'bf16), else native. In every mode a '
      'strided 1x1 filter gradient that oneDNN gets wrong (AVX2-only CPUs) '
      'is a matrix product (lmid_tf/speed/conv_gradients.py). The saved '
      'model keeps plain Keras layers.', conv_gradients_lib.MODES)
  seed: int = _setting(0, 'Seed of batches, augmentation and (with '
                       '--deterministic) the initial weights.')
  deterministic: bool = _setting(
      False, 'Seeded initial weights and deterministic ops: reruns and '
      'resumed runs give bit-equal weights (a little slower).')
  train_landmark_model: str = _setting(
      '', 'A landmark_model.keras (lmid_tf.train_landmarks): train on the '
      'landmarks it finds in each train image instead of the annotated '
      'ones, so that the model learns the predictor\'s errors (for photos '
      'served without landmarks).')
  worker_timeout: int = _setting(
      120, 'multi_worker: seconds a step waits for the other workers before '
      'the run stops with an error (then rerun every worker to resume).')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What the trainer runs: Settings resolved against the dataset."""
  data: str
  run_dir: str
  model: model.ModelConfig
  preprocess: preprocess.PreprocessConfig
  inputs: pipeline.TrainInputConfig
  losses: objective.LossConfig
  phases: tuple
  steps_per_epoch: int
  eval_every: int
  eval_batch_size: int
  distribution: str
  precision: str
  fused_batch_norm: bool
  conv_gradients: str
  seed: int
  deterministic: bool
  worker_timeout: int
  train_landmark_model: str = ''


# ---- flags ------------------------------------------------------------------

def _fields(names=None) -> list:
  fields = dataclasses.fields(Settings)
  if names is None:
    return fields
  unknown = set(names) - {f.name for f in fields}
  if unknown:
    raise ValueError(f'not settings: {sorted(unknown)}')
  return [f for f in fields if f.name in names]


def define_flags(flag_values=None, names=None) -> None:
  """Defines one absl flag per Settings field (or per field in `names`, for a
  tool that uses only those: any other is then an unknown flag, never one
  silently ignored), with its default and help."""
  from absl import flags
  flag_values = flags.FLAGS if flag_values is None else flag_values
  for field in _fields(names):
    name, default = field.name, field.default
    help_text, choices = field.metadata['help'], field.metadata['choices']
    if field.type is bool:
      flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
    elif field.type is int:
      flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif field.type is float:
      flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    elif choices:
      flags.DEFINE_enum(name, default, list(choices), help_text,
                        flag_values=flag_values)
    elif field.type is str:
      flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
    else:
      # Single-valued flags only: a repeated (multi) flag appends across
      # included flagfiles, so a later file could not replace it.
      raise TypeError(f'Settings.{name}: no flag type for {field.type}')


def from_flags(flag_values, names=None) -> Settings:
  """Settings from parsed flags; fields outside `names` keep defaults."""
  return Settings(**{field.name: flag_values[field.name].value
                     for field in _fields(names)})


def from_flagfile(path: str, **overrides) -> Settings:
  """Settings of a flagfile (nested --flagfile paths are relative to the
  working directory, as absl reads them), with `overrides` applied."""
  from absl import flags
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  flag_values(flag_values.read_flags_from_files(
      ['settings', f'--flagfile={path}']))
  return dataclasses.replace(from_flags(flag_values), **overrides)


# ---- Settings -> TrainConfig ------------------------------------------------

def preprocess_config(s: Settings, channels: int, num_landmarks: int,
                      template: tuple = (), landmark_names: tuple = ()
                      ) -> preprocess.PreprocessConfig:
  """num_landmarks: the data's; the baseline variant uses none of them.
  template: the alignment template (used when s.align)."""
  landmark_id = s.variant == 'landmark_id'
  if s.align and landmark_id and len(template) != num_landmarks:
    raise ValueError(f'--align: the template has {len(template)} landmarks, '
                     f'the data {num_landmarks}')
  return preprocess.PreprocessConfig(
      image_size=s.image_size, channels=channels,
      num_landmarks=num_landmarks if landmark_id else 0,
      radius=s.heatmap_radius, falloff=s.heatmap_falloff,
      reconstruction_size=s.reconstruction_size,
      template=tuple(template) if s.align and landmark_id else (),
      heatmap_channels=s.heatmap_channels, alignment=s.alignment,
      landmark_names=tuple(landmark_names) if landmark_id else ())


def augment_config(s: Settings) -> augment.AugmentConfig:
  return augment.AugmentConfig(
      max_rotation=s.rotation, max_zoom=s.zoom, max_translation=s.translation,
      brightness=s.brightness, contrast=s.contrast, erase=s.erase,
      lighting=s.lighting)


def input_config(s: Settings) -> pipeline.TrainInputConfig:
  return pipeline.TrainInputConfig(
      identities_per_batch=s.identities_per_batch,
      images_per_identity=s.images_per_identity,
      augmentation=augment_config(s), nla=s.nla, nla_strength=s.nla_strength,
      mla=s.mla, mla_min_visible=s.mla_min_visible,
      mla_probability=s.mla_probability, seed=s.seed)


def loss_config(s: Settings) -> objective.LossConfig:
  return objective.LossConfig(
      label_smoothing=s.label_smoothing, triplet_margin=s.triplet_margin,
      center_weight=s.center_weight, center_lr=s.center_lr,
      heatmap_weight=s.heatmap_weight)


def build(s: Settings, metadata: records.Metadata = None,
          require_phases: bool = True) -> TrainConfig:
  """Resolves Settings against the dataset in `s.data`.

  `require_phases=False` is for tools that only look at the inputs.

  Raises:
    ValueError (or FileNotFoundError for a missing dataset) naming the
    setting that is wrong.
  """
  if not s.data:
    raise ValueError('--data is required')
  metadata = metadata or records.read_metadata(s.data)
  num_classes = metadata.splits['train'].get('num_classes') or len(
      metadata.identities)
  template = alignment.template_from_data(s.data) if (
      s.align and s.variant == 'landmark_id') else ()
  return resolve(s, num_classes, metadata.channels, metadata.num_landmarks,
                 require_phases, template, metadata.landmark_names)


def resolve(s: Settings, num_classes: int, channels: int, num_landmarks: int,
            require_phases: bool = True, template: tuple = (),
            landmark_names: tuple = ()) -> TrainConfig:
  """Settings + the data's facts -> TrainConfig (benchmarks on random
  tensors call this directly)."""
  phases = schedule.parse_schedule(s.schedule)
  if not phases and require_phases:
    raise ValueError('no training phases: set --schedule, or include a '
                     'recipe or a schedule (configs/paper/schedule_*.flags) '
                     'in the flagfile')
  for name in ('erase', 'lighting'):
    if not 0.0 <= getattr(s, name) <= 1.0:
      raise ValueError(f'--{name}={getattr(s, name)}: a fraction, from 0 '
                       '(off) to 1')
  pre = preprocess_config(s, channels, num_landmarks, template,
                          landmark_names)
  model_landmarks = pre.num_landmarks if pre.heatmap_channels else 0
  if not model_landmarks and any(p.reconstruct for p in phases):
    raise ValueError('a model without heatmap channels has no heatmaps to '
                     'reconstruct: use phases without reconstruct=1')
  if not s.heatmap_channels and not (s.align and pre.num_landmarks):
    raise ValueError('--noheatmap_channels leaves the landmarks unused: '
                     'add --align, or use --variant=baseline')
  return TrainConfig(
      data=s.data, run_dir=s.run_dir,
      model=model.ModelConfig(
          num_classes=num_classes, image_size=s.image_size,
          channels=channels, num_landmarks=model_landmarks,
          backbone=s.backbone, embedding_dim=s.embedding_dim,
          reconstruction=any(p.reconstruct for p in phases), init=s.init,
          first_conv_init=s.first_conv_init,
          reconstruction_size=s.reconstruction_size,
          landmark_pooling_bins=s.landmark_pooling_bins),
      preprocess=pre, inputs=input_config(s), losses=loss_config(s),
      phases=phases, steps_per_epoch=s.steps_per_epoch,
      eval_every=s.eval_every, eval_batch_size=s.eval_batch_size,
      distribution=s.distribution, precision=s.precision,
      fused_batch_norm=s.fused_batch_norm,
      conv_gradients=s.conv_gradients, seed=s.seed,
      deterministic=s.deterministic,
      worker_timeout=s.worker_timeout,
      train_landmark_model=s.train_landmark_model)

"""lmid-tf's Landmark-Id training step and embedding inference, ready to time
or trace, under a named speed setting (benchmarks/peer_pytorch.py,
benchmarks/op_profile.py).

A setting is tokens joined by '_': plain, xla (jit_compile), bf16 (Keras'
mixed_bfloat16 policy), fused (lmid_tf/speed/fused_batch_norm.py), fold (batch
norms folded into convolutions for inference, as serving.export does),
fusedadam (lmid_tf/speed/fused_adam.py), matmul (lmid_tf/speed/conv_gradients.py:
convolution gradients as matrix products, biases before batch norms
dropped), upsample (lmid_tf/speed/upsampling.py: bilinear upsampling without
mixed precision's saturating cast), frozen (inference at batch <=
lmid_tf/speed/single_photo.SMALL_BATCH through the frozen copy),
stridedkernels (with matmul: strided 1×1 convolutions through TensorFlow's
strided kernels forward and for the input gradient, matmul's path before
2026-12-08); e.g. 'bf16_fused_fold'.
"""

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from lmid_tf import config
from lmid_tf.speed import conv_gradients
from lmid_tf.speed import fold_batch_norm
from lmid_tf.speed import fused_adam as lmid_fused_adam
from lmid_tf.speed import fused_batch_norm
from lmid_tf.modeling import model as model_lib
from lmid_tf.modeling import objective
from lmid_tf.speed import precision
from lmid_tf.speed import single_photo
from lmid_tf.speed import upsampling

NUM_CLASSES = 100
IMAGES_PER_IDENTITY = 4
TOKENS = ('plain', 'xla', 'bf16', 'fused', 'fold', 'fusedadam', 'matmul',
          'upsample', 'frozen', 'stridedkernels')


def options(setting: str) -> dict:
  """'bf16_fused_fold' -> step_function's keyword arguments."""
  tokens = set(setting.split('_'))
  unknown = tokens - set(TOKENS)
  if unknown:
    raise ValueError(f'setting {setting!r}: unknown {sorted(unknown)}; '
                     f'tokens are {", ".join(TOKENS)}')
  return dict(jit='xla' in tokens, bf16='bf16' in tokens,
              fused='fused' in tokens, fold='fold' in tokens,
              fused_adam='fusedadam' in tokens, matmul='matmul' in tokens,
              upsample='upsample' in tokens, frozen='frozen' in tokens,
              strided_kernels='stridedkernels' in tokens)


def define_shape_flags():
  """The network and input shape flags of the benchmarks that time or trace
  this step (--backbone, --size, --batch, --channels)."""
  flags.DEFINE_string('backbone', 'resnet50', 'resnet50 or '
                      'mobilenet_v2_0.35.')
  flags.DEFINE_integer('size', 128, 'Input side.')
  flags.DEFINE_integer('batch', 32, 'Batch (P x 4 images).')
  flags.DEFINE_integer('channels', 3, 'Image channels C (k = 3 heatmaps).')


def build_network(backbone, size, channels, landmarks):
  cfg = config.resolve(config.Settings(
      backbone=backbone, image_size=size, init='none',
      variant='landmark_id' if landmarks else 'baseline',
      schedule=('timed trains=all lr=1e-4 epochs=1 '
                f'reconstruct={int(bool(landmarks))}')),
      num_classes=NUM_CLASSES, channels=channels, num_landmarks=landmarks)
  return cfg, model_lib.build_model(cfg.model)


def step_function(backbone, size, batch, channels, landmarks, jit=False,
                  bf16=False, train=True, reconstruct=True, fused=False,
                  fold=False, fused_adam=False, matmul=False, upsample=False,
                  frozen=False, strided_kernels=False):
  """A no-argument callable that runs one training step of Objective (all
  losses, all layers trainable) or, with train=False, one embedding
  inference, on fixed random inputs and returns a numpy result."""
  keras.utils.set_random_seed(0)
  # Layers keep the policy they were built under.
  with precision.building_under('mixed_bfloat16' if bf16 else 'float32'):
    cfg, net = build_network(backbone, size, channels, landmarks)
    if fused:
      fused_batch_norm.fuse(net)
    if matmul and train:
      conv_gradients.use(net, subsample_pointwise=not strided_kernels)
    elif train:
      conv_gradients.correct(net)   # as lmid_tf.train does
    if upsample:
      upsampling.use(net)
    rng = np.random.default_rng(0)
    inputs = {
        'image': tf.constant(rng.normal(size=(batch, size, size, channels)),
                             tf.float32)}
    if landmarks:
      inputs['heatmaps'] = tf.constant(
          rng.random((batch, size, size, landmarks)), tf.float32)
    if not train:
      if fold:
        fold_batch_norm.fold(net)
      embedder = model_lib.embedding_model(net)
      # The inputs are arguments, not captured constants, so that freezing
      # cannot fold the whole computation away.
      infer = tf.function(lambda x: embedder(x, training=False)['embedding'],
                          jit_compile=jit)
      if frozen and batch <= single_photo.SMALL_BATCH:
        infer = single_photo.freeze(infer.get_concrete_function(
            {k: tf.TensorSpec(v.shape, v.dtype) for k, v in inputs.items()}))
      return lambda: infer(inputs).numpy()
    trainer = objective.Objective(net, NUM_CLASSES, cfg.losses)
    model_lib.set_trainable(net, ['all'])
    if not reconstruct:
      model_lib.set_trainable(net, ['all'], frozen=('reconstruction',))
    adam = lmid_fused_adam.FusedAdam if fused_adam else keras.optimizers.Adam
    trainer.compile(adam(1e-4), reconstruct=reconstruct and bool(landmarks),
                    jit_compile=jit)
    targets = {'label': tf.constant(np.arange(batch) // IMAGES_PER_IDENTITY,
                                    tf.int32)}
    if landmarks:
      side = cfg.preprocess.reconstruction_size
      targets['heatmaps'] = tf.constant(
          rng.random((batch, side, side, landmarks)), tf.float32)
    trainer.make_train_function()
    step = trainer.train_function
    data = iter(tf.data.Dataset.from_tensors((inputs, targets)).repeat())
    return lambda: step(data)['loss'].numpy()

r"""lmid-tf against PyTorch on this CPU: the same network, the same step.

  .venv/bin/pip install -r benchmarks/requirements-peer.txt
  python -m benchmarks.peer_pytorch --backbone=resnet50 --size=128 --batch=32

Builds Landmark-Id's training network twice, in lmid-tf (lmid_tf.modeling.model,
lmid_tf.modeling.objective) and as a PyTorch twin written here: C + k input
channels; the backbone (ResNet50 or MobileNetV2-0.35); GAP -> embedding ->
BNNeck -> classifier; the heatmap reconstruction head; smoothed ID +
batch-hard triplet + center loss (centres moved by their own SGD) + the
reconstruction BCE, Adam. Then, in one process, it times on identical
random inputs:

* a full training step (images/s), each framework under each of its
  candidate settings (PyTorch: channels-last, bf16 autocast where the CPU
  has bf16, optionally torch.compile; lmid-tf: plain tf.function, XLA,
  bf16 mixed precision);
* embedding inference at batch --batch (images/s) and at batch 1 (p50 and
  p99 latency of one call).

It prints a table, each side's best setting, the ratios last, and the share
of the machine's measured matmul ceiling (fp32 or bf16, as the setting
computes) that each training step and inference reaches.
Only the timing runs here; nothing is written.
"""

import os
import sys
import time
import warnings

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks import machine
from benchmarks import tf_step
from lmid_tf import config
from lmid_tf.modeling import objective

NUM_CLASSES = tf_step.NUM_CLASSES
IMAGES_PER_IDENTITY = tf_step.IMAGES_PER_IDENTITY


# ---- the PyTorch twin ---------------------------------------------------------

def _conv_bn(cin, cout, kernel, stride=1, groups=1, relu=True, eps=1e-3):
  layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                      bias=False), nn.BatchNorm2d(cout, eps=eps)]
  return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else (
      nn.Sequential(*layers))


class _Bottleneck(nn.Module):

  def __init__(self, cin, width, stride):
    super().__init__()
    self.body = nn.Sequential(
        _conv_bn(cin, width, 1, stride, eps=1.001e-5),
        _conv_bn(width, width, 3, eps=1.001e-5),
        _conv_bn(width, 4 * width, 1, relu=False, eps=1.001e-5))
    self.shortcut = (_conv_bn(cin, 4 * width, 1, stride, relu=False,
                              eps=1.001e-5)
                     if stride != 1 or cin != 4 * width else nn.Identity())

  def forward(self, x):
    return F.relu(self.body(x) + self.shortcut(x))


def resnet50(channels: int) -> nn.Module:
  """Keras' ResNet50 layout (stride on the first 1x1 of a stage)."""
  layers = [nn.Conv2d(channels, 64, 7, 2, 3), nn.BatchNorm2d(64, eps=1.001e-5),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
  cin = 64
  for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                (512, 3, 2)):
    for i in range(blocks):
      layers.append(_Bottleneck(cin, width, stride if i == 0 else 1))
      cin = 4 * width
  return nn.Sequential(*layers), cin


def _divisible(value, divisor=8):
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class _InvertedResidual(nn.Module):

  def __init__(self, cin, cout, stride, expansion):
    super().__init__()
    hidden = cin * expansion
    layers = [_conv_bn(cin, hidden, 1)] if expansion != 1 else []
    layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
               _conv_bn(hidden, cout, 1, relu=False)]
    self.body = nn.Sequential(*layers)
    self.residual = stride == 1 and cin == cout

  def forward(self, x):
    return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(channels: int, alpha: float = 0.35) -> nn.Module:
  """Keras' MobileNetV2 layout at width `alpha` (ReLU instead of ReLU6
  changes no cost)."""
  cin = _divisible(32 * alpha)
  layers = [_conv_bn(channels, cin, 3, 2)]
  for expansion, width, repeats, stride in (
      (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
    cout = _divisible(width * alpha)
    for i in range(repeats):
      layers.append(_InvertedResidual(cin, cout, stride if i == 0 else 1,
                                      expansion))
      cin = cout
  layers.append(_conv_bn(cin, 1280, 1))
  return nn.Sequential(*layers), 1280


# The backbones the twin has.
TWINS = {'resnet50': resnet50, 'mobilenet_v2_0.35': mobilenet_v2}


class TorchLandmarkId(nn.Module):
  """lmid_tf.modeling.model.build_model's network (Landmark-Id with reconstruction)."""

  def __init__(self, backbone: str, channels: int, landmarks: int,
               embedding_dim: int, num_classes: int,
               reconstruction_size: int = 64):
    super().__init__()
    self.backbone, features = TWINS[backbone](channels + landmarks)
    self.embedding = nn.Linear(features, embedding_dim)
    self.bnneck = nn.BatchNorm1d(embedding_dim, eps=1e-3)
    self.bnneck.bias.requires_grad_(False)          # Keras center=False
    self.logits = nn.Linear(embedding_dim, num_classes, bias=False)
    self.base = 8
    self.dense = nn.Linear(embedding_dim, self.base * self.base * 128)
    blocks, cin, layers = 0, 128, []
    size = self.base
    for cout in (128, 64, 32, 32, 32):
      if size >= reconstruction_size:
        break
      layers += [nn.Upsample(scale_factor=2, mode='bilinear',
                             align_corners=False), _conv_bn(cin, cout, 3)]
      cin, size, blocks = cout, size * 2, blocks + 1
    layers += [nn.Conv2d(cin, landmarks, 1), nn.Sigmoid()]
    self.reconstruction = nn.Sequential(*layers)

  def forward(self, x):
    features = self.backbone(x).mean(dim=(2, 3))
    embedding = self.embedding(features)
    logits = self.logits(self.bnneck(embedding))
    maps = self.dense(embedding).view(-1, 128, self.base, self.base)
    return embedding, logits, self.reconstruction(maps)

  def embed(self, x):
    features = self.backbone(x).mean(dim=(2, 3))
    return F.normalize(self.bnneck(self.embedding(features)), dim=1)


class _Embed(nn.Module):
  """TorchLandmarkId.embed as a module's forward, for tracing."""

  def __init__(self, net):
    super().__init__()
    self.net = net

  def forward(self, x):
    return self.net.embed(x)


def torch_losses(embedding, logits, maps, labels, target_maps, centers,
                 cfg: objective.LossConfig):
  """The same objective as lmid_tf.modeling.objective (eq. 2 of the paper)."""
  embedding, logits, maps = embedding.float(), logits.float(), maps.float()
  id_loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
  distances = torch.cdist(embedding, embedding)
  same = labels[:, None] == labels[None, :]
  positive = torch.where(same, distances, torch.zeros_like(distances)).amax(1)
  negative = torch.where(same, torch.full_like(distances, 1e9),
                         distances).amin(1)
  triplet = F.relu(positive - negative + cfg.triplet_margin).mean()
  center = ((embedding - centers[labels]) ** 2).sum(1).mean()
  heatmap = F.binary_cross_entropy(maps.clamp(1e-7, 1 - 1e-7), target_maps)
  return (id_loss + triplet + cfg.center_weight * center
          + cfg.heatmap_weight * heatmap), center


def time_torch(backbone, size, batch, channels, landmarks, steps,
               bf16=False, compiled=False, train=True,
               fused_adam=False, latency=False, frozen=False):
  """Images/s of a PyTorch training step (train=True) or of embedding
  inference at `batch`, channels-last, after warm-up; with `latency`, the
  (p50, p99) milliseconds of one call instead."""
  torch.manual_seed(0)
  cfg = config.loss_config(config.Settings())
  net = TorchLandmarkId(backbone, channels, landmarks, 256, NUM_CLASSES)
  net = net.to(memory_format=torch.channels_last)
  x = torch.randn(batch, channels + landmarks, size, size).to(
      memory_format=torch.channels_last)
  labels = torch.arange(batch) // IMAGES_PER_IDENTITY
  target = torch.rand(batch, landmarks, 64, 64)
  centers = torch.zeros(NUM_CLASSES, 256, requires_grad=True)
  # fused=True: one kernel for the whole update (PyTorch >= 2.4 on CPU);
  # the default is the multi-tensor (foreach) implementation.
  optimizer = torch.optim.Adam(net.parameters(), 1e-4,
                               fused=True if fused_adam else None)
  center_optimizer = torch.optim.SGD([centers], 0.5)
  autocast = lambda: torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16)

  def step():
    optimizer.zero_grad(set_to_none=True)
    center_optimizer.zero_grad(set_to_none=True)
    with autocast():
      embedding, logits, maps = net(x)
    loss, center = torch_losses(embedding, logits, maps, labels, target,
                                centers, cfg)
    loss.backward()
    centers.grad.mul_(1.0 / cfg.center_weight)
    optimizer.step()
    center_optimizer.step()

  def infer():
    with torch.inference_mode(), autocast():
      return net.embed(x)

  if train:
    net.train()
    run = torch.compile(step) if compiled else step
  else:
    net.eval()
    run = torch.compile(infer) if compiled else infer
    if frozen:
      # TorchScript's frozen graph (weights as constants, oneDNN fusions),
      # PyTorch's own answer to single-call CPU latency.
      with torch.inference_mode(), autocast():
        scripted = torch.jit.freeze(torch.jit.trace(_Embed(net), x).eval())
        scripted(x)
      def run():
        with torch.inference_mode(), autocast():
          return scripted(x)
  return _latency(run, steps) if latency else _rate(run, batch, steps)


# ---- lmid-tf --------------------------------------------------------------------

def time_tf(backbone, size, batch, channels, landmarks, steps,
            latency=False, **setting):
  """Images/s of lmid-tf's training step or embedding inference
  (tf_step.step_function's keyword arguments), after warm-up; with
  `latency`, the (p50, p99) milliseconds of one call instead."""
  run = tf_step.step_function(backbone, size, batch, channels, landmarks,
                              **setting)
  return _latency(run, steps) if latency else _rate(run, batch, steps)


def _rate(run, batch, steps, warmup=3) -> float:
  for _ in range(warmup):
    run()
  start = time.perf_counter()
  for _ in range(steps):
    run()
  return batch * steps / (time.perf_counter() - start)


def _latency(run, steps, warmup=5) -> tuple:
  """(p50, p99) milliseconds of one call, over 8 x `steps` calls (a
  single photo's latency, as the review desk and `identify query` wait for
  it)."""
  for _ in range(warmup):
    run()
  times = []
  for _ in range(8 * steps):
    start = time.perf_counter()
    run()
    times.append(1000 * (time.perf_counter() - start))
  return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def matmul_ceiling(dtype: str) -> float:
  """GFLOP/s of a 2048² matrix product in `dtype` ('float32' or
  'bfloat16') on all cores, the machine's practical ceiling for
  convolutions lowered to GEMMs: the best of PyTorch's and TensorFlow's
  (both oneDNN) over three tries, since other tenants of the machine only
  ever slow a try down. (numpy's OpenBLAS is not asked: this workplace may
  pin it to an older kernel with OPENBLAS_CORETYPE, which halved its fp32
  figure on a Zen 4 CPU and put a training step at 107 % of it.)"""
  a = torch.rand(2048, 2048).to(getattr(torch, dtype))
  b = tf.cast(tf.random.uniform([2048, 2048]), dtype)
  multiplies = (lambda: a @ a, lambda: tf.linalg.matmul(b, b).numpy())
  return max(_gflops(multiply) for _ in range(3) for multiply in multiplies)


def _gflops(multiply, side=2048, runs=5) -> float:
  multiply()
  start = time.perf_counter()
  for _ in range(runs):
    multiply()
  return 2 * side ** 3 * runs / (time.perf_counter() - start) / 1e9


def forward_gflop(backbone, size, channels, landmarks) -> float:
  """GFLOP of one forward pass of the training network, per image."""
  _, net = tf_step.build_network(backbone, size, channels, landmarks)
  spec = {'image': tf.TensorSpec([1, size, size, channels]),
          'heatmaps': tf.TensorSpec([1, size, size, landmarks])}
  graph = tf.function(lambda x: net(x, training=False)).get_concrete_function(
      spec).graph
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-direct-tensorflow-import
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-direct-tensorflow-import
  options = option_builder.ProfileOptionBuilder(
      option_builder.ProfileOptionBuilder.float_operation()).with_empty_output(
      ).build()
  return model_analyzer.profile(graph, options=options).total_float_ops / 1e9


FLAGS = flags.FLAGS


def define_flags():
  tf_step.define_shape_flags()
  flags.DEFINE_integer('steps', 8, 'Timed steps per setting.')
  flags.DEFINE_list('tf_settings', ['plain', 'bf16_fused_fold_fusedadam',
                                    'bf16_fused_fold_fusedadam_matmul_frozen'],
                    'lmid-tf settings to try: plain, xla, bf16, xla_bf16, '
                    'and any of them + _fused (lmid_tf/speed/fused_batch_norm.py) '
                    'and/or + _fold (inference with batch norms folded into '
                    'the convolutions, as the export does), + _fusedadam '
                    '(lmid_tf/speed/fused_adam.py), + _matmul (training with '
                    'lmid_tf/speed/conv_gradients.py), + _frozen (batch-1 '
                    'inference through lmid_tf/speed/single_photo.py).')
  flags.DEFINE_bool('breakdown', True, 'Also time lmid-tf\'s best setting '
                    'without the reconstruction head and forward only: '
                    'where the step\'s time goes.')
  flags.DEFINE_list('torch_settings', ['fp32', 'bf16', 'bf16_fusedadam',
                                       'bf16_fusedadam_frozen'],
                    'PyTorch settings to try (all channels-last): fp32, '
                    'bf16, compile, compile_bf16, and any + _fusedadam '
                    '(torch.optim.Adam(fused=True)), + _frozen (inference '
                    'through torch.jit.freeze of the traced embedding).')


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  print('command: python -m benchmarks.peer_pytorch ' + ' '.join(sys.argv[1:]))
  print(machine.describe())
  tf.get_logger().setLevel('ERROR')
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  print(f'tensorflow {tf.__version__} (oneDNN {machine.onednn_state()}, '
        f'{threads} threads); torch {torch.__version__} '
        f'({torch.get_num_threads()} threads, mkldnn '
        f'{torch.backends.mkldnn.is_available()})')
  if 'avx512_bf16' not in machine.cpu_flags() and 'amx_bf16' not in (
      machine.cpu_flags()):
    print('note: this CPU has no bf16 instructions; bf16 settings emulate it')
  shape = (FLAGS.backbone, FLAGS.size, FLAGS.batch, FLAGS.channels, 3)
  rows = []
  for setting in FLAGS.torch_settings:
    options = dict(bf16='bf16' in setting, compiled='compile' in setting,
                   fused_adam='fusedadam' in setting,
                   frozen='frozen' in setting)
    rows.append(('PyTorch', f'channels-last {setting}',
                 time_torch(*shape, FLAGS.steps, **options),
                 time_torch(*shape, FLAGS.steps, train=False, **options),
                 time_torch(*shape[:2], 1, *shape[3:], FLAGS.steps,
                            train=False, latency=True, **options)))
    print(f'{rows[-1][0]:8} {rows[-1][1]:24} train {rows[-1][2]:6.1f} img/s, '
          f'inference {rows[-1][3]:6.1f} img/s, batch 1 p50 '
          f'{rows[-1][4][0]:.1f} ms', flush=True)
  for setting in FLAGS.tf_settings:
    options = tf_step.options(setting)
    rows.append(('lmid-tf', setting,
                 time_tf(*shape, FLAGS.steps, **options),
                 time_tf(*shape, FLAGS.steps, train=False, **options),
                 time_tf(*shape[:2], 1, *shape[3:], FLAGS.steps, train=False,
                         latency=True, **options)))
    print(f'{rows[-1][0]:8} {rows[-1][1]:24} train {rows[-1][2]:6.1f} img/s, '
          f'inference {rows[-1][3]:6.1f} img/s, batch 1 p50 '
          f'{rows[-1][4][0]:.1f} ms', flush=True)

  gflop = forward_gflop(*shape[:2], *shape[3:])
  ceilings = {False: matmul_ceiling('float32'),
              True: matmul_ceiling('bfloat16')}
  print(f'\n{FLAGS.backbone} at {FLAGS.size} px, batch {FLAGS.batch}, '
        f'{FLAGS.channels} + 3 channels: {gflop:.2f} GFLOP per image forward '
        f'(x3 for a training step); matmul ceilings (best of PyTorch and '
        f'TensorFlow): fp32 {ceilings[False]:.0f} GFLOP/s, bf16 '
        f'{ceilings[True]:.0f} GFLOP/s')
  print(f'| framework | setting | train img/s | inference img/s (batch '
        f'{FLAGS.batch}) | batch 1, p50 ms | batch 1, p99 ms | train, % of its '
        'precision\'s ceiling | inference, % of it |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
  for name, setting, train, infer, (p50, p99) in rows:
    ceiling = ceilings['bf16' in setting]
    print(f'| {name} | {setting} | {train:.1f} | {infer:.1f} | {p50:.1f} | '
          f'{p99:.1f} | {100 * 3 * gflop * train / ceiling:.0f} % | '
          f'{100 * gflop * infer / ceiling:.0f} % |')
  best = {}
  for side in ('PyTorch', 'lmid-tf'):
    mine = [r for r in rows if r[0] == side]
    best[side] = (max(mine, key=lambda r: r[2]), max(mine, key=lambda r: r[3]),
                  min(mine, key=lambda r: r[4][0]))
  print(f'\nbest training: lmid-tf {best["lmid-tf"][0][1]} '
        f'{best["lmid-tf"][0][2]:.1f} img/s vs PyTorch '
        f'{best["PyTorch"][0][1]} {best["PyTorch"][0][2]:.1f} img/s: '
        f'{best["lmid-tf"][0][2] / best["PyTorch"][0][2]:.2f}x')
  if FLAGS.breakdown:
    setting = best['lmid-tf'][0][1]
    options = tf_step.options(setting)
    full = best['lmid-tf'][0][2]
    no_head = time_tf(*shape, FLAGS.steps, reconstruct=False, **options)
    forward = best['lmid-tf'][0][3]
    per_image = lambda rate: 1000 / rate
    print(f'\nwhere lmid-tf\'s {setting} step goes, ms per image: full step '
          f'{per_image(full):.1f}; without the reconstruction head '
          f'{per_image(no_head):.1f} (head: '
          f'{100 * (1 - full / no_head):.0f} % of the step); forward alone '
          f'{per_image(forward):.1f} ({100 * full / forward:.0f} %)')
  print(f'best inference: lmid-tf {best["lmid-tf"][1][1]} '
        f'{best["lmid-tf"][1][3]:.1f} img/s vs PyTorch '
        f'{best["PyTorch"][1][1]} {best["PyTorch"][1][3]:.1f} img/s: '
        f'{best["lmid-tf"][1][3] / best["PyTorch"][1][3]:.2f}x')
  print(f'best batch-1 latency (p50): lmid-tf {best["lmid-tf"][2][1]} '
        f'{best["lmid-tf"][2][4][0]:.1f} ms vs PyTorch {best["PyTorch"][2][1]} '
        f'{best["PyTorch"][2][4][0]:.1f} ms: '
        f'{best["PyTorch"][2][4][0] / best["lmid-tf"][2][4][0]:.2f}x')


if __name__ == '__main__':
  define_flags()
  app.run(main)

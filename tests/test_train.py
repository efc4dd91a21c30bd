"""Training: schedules, trainable toggling, learning, resume, the CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, tiny_settings, tiny_train_config
from lmid_tf.training import checkpoints
from lmid_tf import config
from lmid_tf.modeling import model
from lmid_tf.modeling import objective
from lmid_tf.data import pipeline
from lmid_tf.data import records
from lmid_tf.training import schedule
from lmid_tf import train


def test_parse_phase():
  phase = schedule.parse_phase(
      'stage2b trains=all lr=3.5e-5 epochs=60 reconstruct=1 decay_epochs=20,40')
  assert phase == schedule.Phase('stage2b', ('all',), 3.5e-5, 60, True, 0,
                                 (20, 40))
  with pytest.raises(ValueError, match='missing lr='):
    schedule.parse_phase('x epochs=3')
  with pytest.raises(ValueError, match="unknown layer group 'head'"):
    schedule.parse_phase('x trains=head lr=1 epochs=1')
  with pytest.raises(ValueError, match='unknown keys'):
    schedule.parse_phase('x lr=1 epochs=1 momentum=0.9')


def test_learning_rate_warmup_and_decay():
  phase = schedule.Phase('p', ('all',), 1.0, 10, warmup_epochs=2,
                         decay_epochs=(5, 8))
  rates = [phase.learning_rate(e) for e in range(10)]
  np.testing.assert_allclose(rates, [0.1, 0.55, 1, 1, 1, 0.1, 0.1, 0.1, 0.01,
                                     0.01])


def test_paper_schedules_follow_the_paper(monkeypatch):
  monkeypatch.chdir(REPO)
  stages = schedule.parse_schedule(config.from_flagfile(
      'configs/paper/schedule_landmark_id.flags').schedule)
  assert [p.name for p in stages] == ['stage1a', 'stage1b', 'stage2a',
                                      'stage2b']
  assert stages[0].trains == ('first_conv', 'landmark_pooling', 'classifier')
  assert stages[2].trains == ('reconstruction',) and stages[2].reconstruct
  assert stages[3].lr == pytest.approx(stages[1].lr / 10)
  assert not stages[1].reconstruct and stages[3].reconstruct
  assert [p.epochs for p in stages] == [10, 120, 10, 60]
  assert stages[1].decay_epochs == (40, 80)
  baseline, = schedule.parse_schedule(config.from_flagfile(
      'configs/paper/schedule_baseline.flags').schedule)
  assert (baseline.lr, baseline.epochs, baseline.warmup_epochs,
          baseline.decay_epochs) == (3.5e-4, 120, 10, (40, 70))


def test_parse_schedule():
  a, b = schedule.parse_schedule(' a trains=all lr=1 epochs=2 ;b lr=0.5 '
                                 'epochs=3 reconstruct=1; ')
  assert (a.name, a.epochs, b.name, b.lr, b.reconstruct) == (
      'a', 2, 'b', 0.5, True)
  assert schedule.parse_schedule('') == ()
  with pytest.raises(ValueError, match="phase 'a' is named twice"):
    schedule.parse_schedule('a lr=1 epochs=1; a lr=1 epochs=2')


def test_a_later_schedule_replaces_the_included_one(tmp_path, monkeypatch):
  # The point of one single-valued --schedule: a record that includes a
  # recipe, or the command line, replaces the recipe's whole schedule (a
  # repeated flag would append to it).
  from absl import flags
  monkeypatch.chdir(REPO)
  record = tmp_path / 'record.flags'
  record.write_text('--flagfile=configs/synthetic_cpu.flags\n'
                    '--schedule=short trains=all lr=1e-3 epochs=3\n')
  included = schedule.parse_schedule(config.from_flagfile(
      'configs/synthetic_cpu.flags').schedule)
  assert [(p.name, p.epochs) for p in included] == [('stage1', 40)]
  replaced = schedule.parse_schedule(
      config.from_flagfile(str(record)).schedule)
  assert [(p.name, p.epochs) for p in replaced] == [('short', 3)]
  flag_values = flags.FlagValues()
  config.define_flags(flag_values)
  flag_values(flag_values.read_flags_from_files(
      ['train', f'--flagfile={record}',
       '--schedule=x trains=all lr=1 epochs=1; y trains=all lr=1 epochs=2']))
  assert [(p.name, p.epochs) for p in schedule.parse_schedule(
      config.from_flags(flag_values).schedule)] == [('x', 1), ('y', 2)]
  assert flag_values['heatmap_radius'].value == 0.10   # the rest is kept


def _trainer(data, groups, reconstruct=False, lr=1e-2):
  cfg = tiny_train_config(data, '')
  net = model.build_model(cfg.model)
  trainer = objective.Objective(net, cfg.model.num_classes, cfg.losses)
  model.set_trainable(net, groups,
                      frozen=() if reconstruct else ('reconstruction',))
  trainer.compile(keras.optimizers.Adam(lr), reconstruct=reconstruct)
  batch = next(iter(pipeline.train_dataset(data, cfg.preprocess, cfg.inputs)))
  return net, trainer, tf.data.Dataset.from_tensors(batch).repeat()


def test_frozen_weights_do_not_move_and_trainable_ones_do(tiny_dataset):
  net, trainer, data = _trainer(tiny_dataset, ['first_conv', 'classifier'])
  backbone = net.get_layer('backbone')
  watched = {
      'first_conv': model.first_conv(backbone).kernel,
      'classifier': net.get_layer('logits').kernel,
      'embedding': net.get_layer('embedding').kernel,
      'backbone': backbone.layers[-3].weights[0],
      'bn_moving_mean': [l for l in backbone.layers
                         if isinstance(l, keras.layers.BatchNormalization)
                         ][-1].moving_mean,
  }
  before = {k: v.numpy().copy() for k, v in watched.items()}
  trainer.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
  moved = {k: not np.array_equal(before[k], v.numpy())
           for k, v in watched.items()}
  assert moved == {'first_conv': True, 'classifier': True, 'embedding': False,
                   'backbone': False, 'bn_moving_mean': False}
  # Toggle and recompile: now everything trains.
  model.set_trainable(net, ['all'], frozen=['reconstruction'])
  trainer.compile(keras.optimizers.Adam(1e-2))
  before = {k: v.numpy().copy() for k, v in watched.items()}
  trainer.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
  assert all(not np.array_equal(before[k], v.numpy())
             for k, v in watched.items())


def test_a_few_steps_reduce_the_loss(tiny_dataset):
  # Seeded, and a step small enough that 12 steps on one batch go down
  # whatever the initial weights (at 1e-2 one seed in six overshot).
  keras.utils.set_random_seed(3)
  _, trainer, data = _trainer(tiny_dataset, ['all'], reconstruct=True,
                              lr=3e-3)
  history = trainer.fit(data, steps_per_epoch=4, epochs=3, verbose=0).history
  assert set(history) >= {'loss', 'id_loss', 'triplet_loss', 'center_loss',
                          'heatmap_loss'}
  assert history['loss'][-1] < history['loss'][0]
  assert history['heatmap_loss'][-1] < history['heatmap_loss'][0]


@pytest.mark.slow
def test_centres_follow_their_own_sgd(tiny_dataset):
  net, trainer, data = _trainer(tiny_dataset, ['all'])
  inputs, targets = next(iter(data))
  centers = trainer.centers.centers
  before = centers.numpy().copy()
  embedding = net(inputs, training=True)['embedding'].numpy()
  trainer.train_on_batch(inputs, targets)
  labels = targets['label'].numpy()
  # SGD lr 0.5 on mean ||f - c||^2: c_j -= 0.5 * (-2/B) * sum_i (f_i - c_j).
  j = labels[0]
  members = embedding[labels == j]
  expected = before[j] + 0.5 * 2 / len(labels) * (members - before[j]).sum(0)
  # The step's own forward pass sees slightly different BN statistics.
  np.testing.assert_allclose(centers.numpy()[j], expected, atol=2e-2)
  untouched = sorted(set(range(len(before))) - set(labels))[0]
  np.testing.assert_array_equal(centers.numpy()[untouched], before[untouched])


class _Killed(Exception):
  pass


@pytest.mark.slow
def test_resume_after_interruption(tiny_dataset, tmp_path, monkeypatch):
  cfg = tiny_train_config(tiny_dataset, str(tmp_path), steps_per_epoch=1,
                          schedule='a trains=all lr=1e-3 epochs=2; '
                                   'b trains=all lr=1e-4 epochs=3 reconstruct=1')
  original_end = train.Checkpointer.on_epoch_end
  calls, at_kill = [], {}

  def killed_after_three_epochs(self, epoch, logs=None):
    original_end(self, epoch, logs)
    calls.append((self.phase_index, epoch))
    if len(calls) == 3:
      at_kill['weights'] = self.model.get_weights()
      at_kill['slots'] = [v.numpy() for v in self.model.optimizer.variables]
      raise _Killed

  monkeypatch.setattr(train.Checkpointer, 'on_epoch_end',
                      killed_after_three_epochs)
  with pytest.raises(_Killed):
    train.train(cfg)
  assert checkpoints.read_position(str(tmp_path / 'checkpoint')) == (1, 1)
  monkeypatch.setattr(train.Checkpointer, 'on_epoch_end', original_end)

  fits = []
  original_fit = objective.Objective.fit
  resumed = {}

  def recording_fit(self, *args, **kwargs):
    fits.append((kwargs['initial_epoch'], kwargs['epochs']))
    if not resumed:
      resumed['weights'] = self.get_weights()
      resumed['slots'] = [v.numpy() for v in self.optimizer.variables]
    return original_fit(self, *args, **kwargs)

  monkeypatch.setattr(objective.Objective, 'fit', recording_fit)
  results = train.train(cfg)
  assert fits == [(1, 3)]            # only phase b, from its second epoch
  # Weights, centres, Adam's moments and its step counter all come back.
  for key in ('weights', 'slots'):
    assert len(resumed[key]) == len(at_kill[key])
    for a, b in zip(resumed[key], at_kill[key]):
      np.testing.assert_array_equal(a, b)
  # The returned metrics are the ones written, over every tiny query
  # (8 identities x 3 images), and the saved model reproduces them.
  with open(tmp_path / 'eval' / 'results.json') as f:
    assert json.load(f) == results
  assert results['queries'] == 24
  from lmid_tf import artifacts
  from lmid_tf.evaluation import retrieval
  embed_fn, pre = artifacts.load_embedder(
      str(tmp_path / 'embedding_model.keras'))
  again = retrieval.evaluate(embed_fn, tiny_dataset, pre).metrics
  assert again['top1'] == results['top1'] and again['mAP'] == pytest.approx(
      results['mAP'], abs=1e-6)
  assert checkpoints.read_position(str(tmp_path / 'checkpoint')) == (2, 0)
  for name in ('embedding_model.keras', 'preprocess.json', 'config.json',
               'eval/results.json', 'eval/cmc.png', 'eval/ranked.png',
               'eval/a/results.json', 'logs/projector/projector_config.pbtxt'):
    assert os.path.exists(tmp_path / name), name


@pytest.mark.slow
def test_cli_help_and_errors(tiny_dataset, tmp_path):
  run = lambda *a: subprocess.run([sys.executable, '-m', 'lmid_tf.train', *a],
                                  cwd=REPO, capture_output=True, text=True)
  helped = run('--helpfull')
  for flag in ('--flagfile', '--schedule', '--init', '--mla_min_visible',
               '--distribution', '--precision', '--[no]nla'):
    assert flag in helped.stdout
  bad = run(f'--data={tiny_dataset}', f'--run_dir={tmp_path}',
            '--schedule=x trains=all lr=1e-3')
  assert bad.returncode == 1
  assert "phase 'x trains=all lr=1e-3': missing epochs=" in bad.stderr
  missing = run(f'--data={tmp_path}/nothing', f'--run_dir={tmp_path}')
  assert missing.returncode == 1 and 'metadata.json not found' in missing.stderr


# What each flagfile in configs/ says, read off the files by hand: variant,
# backbone, alignment ('' when not aligned), heatmap radius, and the
# schedule as (phase, epochs). A record that includes a recipe and sets its
# own --schedule must end up with its own phases only.
SCRATCH = [('stage1', 200), ('stage2a', 5), ('stage2b', 45)]
PRETRAINED = [('stage1a', 2), ('stage1b', 14), ('stage2a', 1), ('stage2b', 3)]
PAPER = [('stage1a', 10), ('stage1b', 120), ('stage2a', 10), ('stage2b', 60)]
CONFIGS = {
    'demo.flags': ('landmark_id', 'small_cnn', 'affine', 0.05,
                   [('stage1', 10), ('stage2a', 1), ('stage2b', 1)]),
    'demo_landmarks.flags': ('landmark_id', 'resnet50', '', 0.05,
                             [('landmarks', 3)]),
    'landmarks_cpu.flags': ('landmark_id', 'resnet50', '', 0.05,
                            [('landmarks', 60)]),
    'pretrain_cpu.flags': ('landmark_id', 'small_cnn', '', 0.05,
                           [('pretrain', 20)]),
    'synthetic_cpu.flags': ('landmark_id', 'small_cnn', 'similarity', 0.10,
                            [('stage1', 40)]),
    'identity_only.flags': ('baseline', 'small_cnn', '', 0.05,
                            [('baseline', 30)]),
    'manta_cpu.flags': ('landmark_id', 'small_cnn', 'tps', 0.05,
                        [('stage1', 20)]),
    'paper/manta.flags': ('landmark_id', 'resnet50', '', 0.05, PAPER),
    'paper/schedule_baseline.flags': ('landmark_id', 'resnet50', '', 0.05,
                                      [('baseline', 120)]),
    'paper/schedule_landmark_id.flags': ('landmark_id', 'resnet50', '', 0.05,
                                         PAPER),
    'paper/synthetic.flags': ('landmark_id', 'resnet50', '', 0.05, PAPER),
    'paper/synthetic_baseline.flags': ('baseline', 'resnet50', '', 0.05,
                                       [('baseline', 120)]),
    'paper/synthetic_common.flags': ('landmark_id', 'resnet50', '', 0.05, []),
    'paper/synthetic_from_scratch.flags': ('landmark_id', 'mobilenet_v2_0.35',
                                           '', 0.05, SCRATCH),
    'experiments/paper_protocol/baseline_250ep.flags': (
        'baseline', 'mobilenet_v2_0.35', '', 0.05, [('baseline', 250)]),
    'experiments/paper_protocol/pooling_168ep.flags': (
        'landmark_id', 'mobilenet_v2_0.35', '', 0.05,
        [('stage1', 150), ('stage2a', 3), ('stage2b', 15)]),
    'experiments/paper_protocol/affine_r05_20ep.flags': (
        'landmark_id', 'small_cnn', 'affine', 0.05, [('stage1', 20)]),
    'experiments/table3/50ep.flags': ('landmark_id', 'small_cnn',
                                      'similarity', 0.10, [('stage1', 50)]),
    'experiments/table3/r20_20ep.flags': ('landmark_id', 'small_cnn',
                                          'similarity', 0.20, [('stage1', 20)]),
    'experiments/hard_variant/hard_erase_light.flags': (
        'landmark_id', 'small_cnn', 'affine', 0.05, [('stage1', 20)]),
    'experiments/hard_variant/noheatmaps.flags': (
        'landmark_id', 'small_cnn', 'affine', 0.05, [('stage1', 20)]),
    'experiments/hard_variant/similarity.flags': (
        'landmark_id', 'small_cnn', 'similarity', 0.05, [('stage1', 20)]),
    'experiments/hard_variant/baseline.flags': (
        'baseline', 'small_cnn', '', 0.05, [('stage1', 20)]),
    'experiments/pretrained_start/small_cnn_pretrained_20ep.flags': (
        'landmark_id', 'small_cnn', '', 0.05, PRETRAINED),
    'experiments/pretrained_start/s1.flags': (
        'landmark_id', 'small_cnn', '', 0.05, PRETRAINED[:2]),
    'experiments/pretrained_start/baseline_20ep.flags': (
        'baseline', 'small_cnn', '', 0.05, [('baseline', 20)]),
    'experiments/landmark_predictor/240ep.flags': (
        'landmark_id', 'resnet50', '', 0.05, [('landmarks', 240)]),
    'experiments/landmark_predictor/480ep.flags': (
        'landmark_id', 'resnet50', '', 0.05, [('landmarks', 480)]),
    'experiments/landmark_predictor/20ep.flags': (
        'landmark_id', 'resnet50', '', 0.05, [('landmarks', 20)]),
    'experiments/landmark_predictor/body_r05_10ep.flags': (
        'landmark_id', 'small_cnn', 'similarity', 0.05, [('stage1', 10)]),
    'experiments/landmark_predictor/body_r05_20ep.flags': (
        'landmark_id', 'small_cnn', 'similarity', 0.05, [('stage1', 20)]),
    'experiments/landmark_predictor/predicted.flags': (
        'landmark_id', 'small_cnn', 'similarity', 0.05, [('stage1', 20)]),
    'experiments/nyala/nyala_6ep.flags': ('baseline', 'small_cnn', '', 0.05,
                                          [('baseline', 6)]),
    'experiments/nyala/pretrained.flags': ('baseline', 'small_cnn', '', 0.05,
                                           [('baseline', 6)]),
    'experiments/manta/100ep.flags': ('landmark_id', 'small_cnn', '', 0.05,
                                      [('pretrain', 100)]),
}


def _config_files():
  """Training flagfiles (`*_convert.flags` are data_tools.convert's)."""
  root = os.path.join(REPO, 'configs')
  return sorted(os.path.relpath(os.path.join(folder, name), root)
                for folder, _, names in os.walk(root)
                for name in names if name.endswith('.flags')
                and not name.endswith('_convert.flags'))


def test_every_config_is_listed_and_configs_stay_few():
  assert _config_files() == sorted(CONFIGS)
  top = os.listdir(os.path.join(REPO, 'configs'))
  assert len(top) <= 15, sorted(top)
  # configs/README.md: a record includes one file, then at most 3 overrides.
  for name in _config_files():
    if name.startswith('experiments/'):
      with open(os.path.join(REPO, 'configs', name)) as f:
        lines = [l for l in f.read().splitlines() if l and l[0] != '#']
      assert 2 <= len(lines) <= 4 and lines[0].startswith('--flagfile='), name


@pytest.mark.parametrize('flagfile', sorted(CONFIGS))
def test_every_config_says_what_it_trains(flagfile, tiny_dataset,
                                          monkeypatch):
  monkeypatch.chdir(REPO)  # flagfiles include each other by repository path
  variant, backbone, alignment, radius, phases = CONFIGS[flagfile]
  settings = config.from_flagfile(f'configs/{flagfile}', data=tiny_dataset)
  assert not settings.run_dir, 'the command names the run folder'
  cfg = config.build(settings, require_phases=bool(phases))
  assert [(p.name, p.epochs) for p in cfg.phases] == phases
  assert (settings.variant, settings.backbone) == (variant, backbone)
  assert (settings.alignment if settings.align else '') == alignment
  assert settings.heatmap_radius == radius
  assert cfg.model.reconstruction == any(p.reconstruct for p in cfg.phases)


def test_flags_come_from_settings_with_one_default():
  from absl import flags
  flag_values = flags.FlagValues()
  config.define_flags(flag_values)
  fields = {f.name: f for f in dataclasses.fields(config.Settings)}
  assert set(flag_values) == set(fields)
  for name, field in fields.items():
    default = flag_values[name].default
    assert (tuple(default) if isinstance(default, list) else default) == (
        field.default), name
  assert config.from_flags(flag_values) == config.Settings()
  # The component configs hold no defaults of their own for any setting.
  from lmid_tf.data import augment, preprocess
  for component in (model.ModelConfig, preprocess.PreprocessConfig,
                    augment.AugmentConfig, pipeline.TrainInputConfig,
                    objective.LossConfig):
    with_default = {f.name for f in dataclasses.fields(component)
                    if f.default is not dataclasses.MISSING}
    assert with_default <= {'bn_momentum', 'landmark_pooling_channels'}, (
        component.__name__, with_default)


def test_build_explains_missing_schedule_and_baseline_reconstruction(
    tiny_dataset):
  with pytest.raises(ValueError, match='no training phases'):
    config.build(tiny_settings(tiny_dataset, schedule=''))
  with pytest.raises(ValueError, match='no heatmaps to reconstruct'):
    config.build(tiny_settings(
        tiny_dataset, variant='baseline',
        schedule='x trains=all lr=1 epochs=1 reconstruct=1'))
  with pytest.raises(ValueError, match="phase 'x' is named twice"):
    config.build(tiny_settings(
        tiny_dataset, schedule='x trains=all lr=1 epochs=1; '
                               'x trains=all lr=1 epochs=2'))


@pytest.mark.parametrize('distribution,precision,fused', [
    pytest.param('mirrored', 'float32', False, marks=pytest.mark.slow),
    pytest.param('default', 'mixed', True, marks=pytest.mark.slow)])
def test_distribution_and_mixed_precision_run(tiny_dataset, tmp_path,
                                              distribution, precision, fused):
  cfg = dataclasses.replace(
      tiny_train_config(tiny_dataset, str(tmp_path), steps_per_epoch=1),
      distribution=distribution, precision=precision,
      fused_batch_norm=fused)
  results = train.train(cfg)
  assert keras.mixed_precision.global_policy().name == 'float32'
  assert results['queries'] > 0
  embedder = keras.saving.load_model(str(tmp_path / 'embedding_model.keras'))
  assert embedder.output['embedding'].dtype == 'float32'
  # Fused for training only: the saved model has plain Keras layers.
  import zipfile
  with zipfile.ZipFile(tmp_path / 'embedding_model.keras') as saved:
    layers = saved.read('config.json').decode()
  assert '"BatchNormalization"' in layers
  assert 'FusedBatchNormalization' not in layers
  # Trained in bfloat16, saved to compute in float32 as the export serves.
  assert 'bfloat16' not in layers


def test_precision_auto_follows_the_measurements():
  from lmid_tf.speed import precision
  bf16_cpu, avx2_cpu = {'avx2', 'avx512_bf16'}, {'avx2', 'fma'}
  auto = lambda backbone, flags, gpu=False: precision.policy(
      'auto', backbone, gpu, flags)
  assert auto('small_cnn', bf16_cpu) == 'mixed_bfloat16'
  assert auto('resnet50', {'amx_bf16'}) == 'mixed_bfloat16'
  # Slower in bf16 (depthwise), emulated bf16, or unmeasured (GPU).
  assert auto('mobilenet_v2_0.35', bf16_cpu) == 'float32'
  assert auto('resnet50', avx2_cpu) == 'float32'
  assert auto('resnet50', bf16_cpu, gpu=True) == 'float32'
  assert precision.policy('mixed', 'mobilenet_v2', False, avx2_cpu) == (
      'mixed_bfloat16')
  assert precision.policy('mixed', 'resnet50', True, set()) == 'mixed_float16'
  assert precision.policy('float32', 'resnet50', False, bf16_cpu) == 'float32'
  with pytest.raises(ValueError, match='--precision=half: one of auto'):
    precision.policy('half', 'resnet50', False, bf16_cpu)


def test_landmark_pooling_and_falloff_settings_are_checked(tiny_dataset):
  cfg = tiny_train_config(tiny_dataset, '')
  metadata = records.read_metadata(tiny_dataset)
  bad = [
      tiny_train_config(tiny_dataset, '', heatmap_falloff=-0.1),
      tiny_train_config(tiny_dataset, '', landmark_pooling_bins=-2),
      tiny_train_config(tiny_dataset, '', variant='baseline',
                        landmark_pooling_bins=4),
  ]
  for wrong, message in zip(bad, ('must be >= 0', 'must be >= 0',
                                  'needs landmarks')):
    with pytest.raises(ValueError, match=message):
      train._check_config(wrong, metadata)
  train._check_config(cfg, metadata)


def test_pretrained_backbone_loads_with_init_path(tiny_dataset, tmp_path):
  from lmid_tf import pretrain
  cfg = tiny_train_config(tiny_dataset, str(tmp_path / 'pre'),
                          variant='baseline', backbone='small_cnn',
                          steps_per_epoch=1,
                          schedule='a trains=all lr=1e-2 epochs=1')
  path = pretrain.pretrain(cfg)
  embedder = keras.saving.load_model(str(tmp_path / 'pre' /
                                         'embedding_model.keras'))
  trained = embedder.get_layer('backbone')
  # A Landmark-Id network starting from it: every layer but the first conv
  # (which now takes image + 3 heatmap channels) holds the trained weights.
  net = model.build_model(tiny_train_config(
      tiny_dataset, '', backbone='small_cnn', init=path).model)
  started = net.get_layer('backbone')
  for layer in started.layers:
    if not layer.weights:
      continue
    same = all(np.array_equal(a, b) for a, b in zip(
        layer.get_weights(), trained.get_layer(layer.name).get_weights()))
    assert same == (layer.name != 'block0_conv0'), layer.name


def test_fused_adam_matches_keras_adam():
  from lmid_tf.speed import fused_adam
  rng = np.random.default_rng(0)
  shapes = [(3, 3, 4, 8), (8,), (16, 5)]
  start = [rng.normal(size=s).astype('float32') for s in shapes]
  grads = [[tf.constant(rng.normal(size=s).astype('float32'))
            for s in shapes] for _ in range(4)]
  results = []
  for adam in (keras.optimizers.Adam, fused_adam.FusedAdam):
    variables = [keras.Variable(v) for v in start]
    optimizer = adam(1e-2)
    step = tf.function(lambda g: optimizer.apply(g, variables))
    for g in grads:
      step(g)
    results.append([v.numpy() for v in variables])
    assert int(optimizer.iterations.numpy()) == 4
    graph = step.get_concrete_function(grads[0]).graph
    fused_ops = [op for op in graph.get_operations()
                 if op.type == 'ResourceApplyAdam']
    # One fused update per weight, or none on Keras' own path.
    assert len(fused_ops) == (len(shapes) if adam is fused_adam.FusedAdam
                              else 0)
  for before, keras_weights, fused_weights in zip(start, *results):
    assert np.abs(fused_weights - before).mean() > 5e-3   # the weights moved
    np.testing.assert_allclose(fused_weights, keras_weights, atol=1e-6)


@pytest.mark.slow
def test_the_step_profile_splits_phases_and_parts(tmp_path):
  # benchmarks/op_profile reads the trace TensorFlow writes; the split must
  # find every phase and part of a real Landmark-Id step, or its table lies.
  from benchmarks import op_profile
  from benchmarks import tf_step
  with pytest.raises(ValueError, match='unknown'):
    tf_step.options('bf16_turbo')
  run = tf_step.step_function('mobilenet_v2_0.35', 32, 8, 1, 3,
                              **tf_step.options('fused_fusedadam'))
  run()
  path, wall = op_profile.trace(run, 2, str(tmp_path))
  by_part, by_type, count = op_profile.breakdown(op_profile.op_events(path),
                                                 2)
  assert wall > 0
  for phase in op_profile.PHASES:
    assert sum(by_part[phase, part] for part in op_profile.PARTS) > 0, phase
  for part in op_profile.PARTS:
    assert by_part['forward', part] > 0 and by_part['backward', part] > 0
  assert count['ResourceApplyAdam'] > 0      # one per trainable weight
  assert any('Conv2D' in op_type for op_type in by_type)
  assert '| backward |' in op_profile.tables(by_part, by_type, count, wall)


@pytest.mark.slow
def test_train_step_settings_time_the_same_arithmetic():
  # A speed setting may change how the step computes, never what: its first
  # loss equals the plain float32 step's (bf16 to its rounding).
  from benchmarks import tf_step
  from benchmarks import train_step
  losses = {}
  for setting in ('plain', 'fused', 'bf16_fused', 'default'):
    step = tf_step.step_function('small_cnn', 32, 8, channels=1, landmarks=3,
                                 **tf_step.options(train_step.resolved_setting(
                                     setting, 'small_cnn')))
    losses[setting] = float(step())
  assert keras.mixed_precision.global_policy().name == 'float32'
  assert np.isfinite(losses['plain']) and losses['plain'] > 0
  assert losses['fused'] == pytest.approx(losses['plain'], rel=1e-4)
  assert losses['bf16_fused'] == pytest.approx(losses['plain'], rel=5e-2)
  assert losses['default'] == pytest.approx(losses['plain'], rel=5e-2)
  assert train_step.resolved_setting('plain', 'small_cnn') == 'plain'
  # What lmid_tf.train runs: Adam through its fused kernel and the
  # upsampling without the saturating cast, whatever the CPU.
  assert {'fusedadam', 'upsample'} <= set(
      train_step.resolved_setting('default', 'small_cnn').split('_'))
  with pytest.raises(ValueError, match="setting 'turbo': one of plain"):
    train_step.resolved_setting('turbo', 'small_cnn')


def test_fused_adam_resumes_a_keras_adam_checkpoint(tmp_path):
  # Runs checkpointed before lmid_tf.train took the fused kernel resume
  # with it: the same slots under the same names.
  from lmid_tf.speed import fused_adam
  variables = [keras.Variable(np.ones((3, 2), 'float32'))]
  written = keras.optimizers.Adam(1e-2)
  for _ in range(3):
    written.apply([tf.constant(np.arange(6.0).reshape(3, 2), tf.float32)],
                  variables)
  path = tf.train.Checkpoint(optimizer=written).save(str(tmp_path / 'ckpt'))
  resumed = fused_adam.FusedAdam(1e-2)
  resumed.build(variables)
  tf.train.Checkpoint(optimizer=resumed).restore(
      path).assert_existing_objects_matched()
  assert int(resumed.iterations.numpy()) == 3
  for name in ('_momentums', '_velocities'):
    np.testing.assert_array_equal(getattr(resumed, name)[0].numpy(),
                                  getattr(written, name)[0].numpy())
    assert np.abs(getattr(resumed, name)[0].numpy()).max() > 0


def test_paired_steps_compare_block_by_block():
  # benchmarks/paired_steps: ratios are taken within a block, so a slow
  # block slows both settings and leaves their ratio alone.
  from benchmarks import paired_steps
  seconds = {'a': [1.0, 2.0, 1.0], 'b': [0.5, 1.0, 2.0]}
  rows = paired_steps.compare(seconds, batch=4)
  assert rows[0] == ('a', 4.0, 1.0, 0, 3)
  assert rows[1] == ('b', 4.0, 2.0, 2, 3)
  assert '| b | 4.0 | 2.000x | 2 of 3 |' in paired_steps.table(rows)
  calls = []
  timed = paired_steps.time_blocks(
      {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
      blocks=2, steps_per_block=2)
  # In turn, and in reverse order every other block, so that neither
  # setting always runs first.
  assert calls == ['a', 'a', 'b', 'b', 'b', 'b', 'a', 'a']
  assert [len(v) for v in timed.values()] == [2, 2]


def test_the_profile_lists_the_ops_inside_a_scope():
  from benchmarks import op_profile
  events = [('f/model/reconstruction_up0_1/clip_by_value/Minimum', 'Minimum',
             2.0),
            ('f/gradient_tape/model/reconstruction_up1_1/resize/Grad',
             'ResizeBilinearGrad', 4.0),
            ('f/model/reconstruction_conv0_1/Conv2D', 'Conv2D', 8.0),
            ('f/reconstruction_up_table', 'Const', 16.0)]   # a name, no scope
  inside = list(op_profile.in_scope(events, 'reconstruction_up'))
  assert [op_type for _, op_type, _ in inside] == ['Minimum',
                                                   'ResizeBilinearGrad']
  _, by_type, count = op_profile.breakdown(inside, steps=2)
  lines = op_profile.type_table(by_type, count, total=3.0, top=5)
  assert lines[2] == '| ResizeBilinearGrad | 2000.0 | 66.7 % | 0 |'
  _, by_type, count = op_profile.breakdown(inside, steps=1)
  assert op_profile.type_table(by_type, count, total=6.0, top=5)[3] == (
      '| Minimum | 2000.0 | 33.3 % | 1 |')

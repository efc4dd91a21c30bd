"""Shared test fixtures: tiny synthetic datasets and a tiny trained model.

Everything is made in temporary folders by the tests themselves; nothing is
downloaded and nothing outside the repository is read.
"""

import os
import sys
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings('ignore', message='This model usually expects')

import pytest  # noqa: E402

import lmid_tf  # noqa: E402,F401  (TensorFlow's start-up logs off)
from data_tools import convert  # noqa: E402
from data_tools import make_synthetic  # noqa: E402
from data_tools import synthetic  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_dataset(out, identities=6, size=32, seed=0, train=3, gallery=3,
                 query=3):
  """Generates and converts a tiny synthetic dataset; returns tfrecords dir."""
  cfg = make_synthetic.DatasetConfig(
      out=str(out), identities=identities, train_images=train,
      gallery_images=gallery, query_images=query, seed=seed, workers=1,
      synth=synthetic.SynthConfig(size=size), progress=False)
  annotations = make_synthetic.generate(cfg)
  records_dir = os.path.join(str(out), 'tfrecords')
  convert.convert(convert.ConvertConfig(
      annotations=annotations, out=records_dir, split_column='split',
      strict=True, workers=1, progress=False))
  return records_dir


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
  """8 identities per split, 32 px; returns the TFRecord folder."""
  return make_dataset(tmp_path_factory.mktemp('tiny'), identities=8)


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, tiny_dataset):
  """A Landmark-Id model trained for a few steps at 32 px: its run folder.

  It aligns its inputs and has the landmark pooling branch and falloff
  heatmaps, so the export, serving and identification tests that use it
  cover them too (the training tests cover the paper's plain network).
  """
  from lmid_tf import train
  run_dir = str(tmp_path_factory.mktemp('run'))
  cfg = tiny_train_config(tiny_dataset, run_dir, landmark_pooling_bins=4,
                          heatmap_falloff=0.5, align=True)
  assert len(cfg.preprocess.template) == 3
  train.train(cfg)
  return run_dir


TINY_PHASES = ('stage1 trains=all lr=1e-3 epochs=1',
               'stage2 trains=all lr=1e-4 epochs=1 reconstruct=1')


def tiny_settings(data='', run_dir='', **overrides):
  """config.Settings for 32-px tests: light backbone, random init, few steps."""
  from lmid_tf import config
  return config.Settings(**_tiny_values(data, run_dir, **overrides))


def tiny_flags(data, run_dir, **overrides) -> list:
  """The same settings as command-line flags, for tests that run the CLI."""
  args = []
  for name, value in _tiny_values(data, str(run_dir), **overrides).items():
    if isinstance(value, bool):
      args.append(f'--{"" if value else "no"}{name}')
    elif isinstance(value, tuple):
      args += [f'--{name}={v}' for v in value]
    else:
      args.append(f'--{name}={value}')
  return args


def _tiny_values(data, run_dir, **overrides) -> dict:
  values = dict(data=data, run_dir=run_dir, backbone='mobilenet_v2_0.35',
                init='none', image_size=32, embedding_dim=32,
                identities_per_batch=4, images_per_identity=2,
                steps_per_epoch=2, eval_every=0, eval_batch_size=32,
                phase=TINY_PHASES)
  values.update(overrides)
  if values.get('variant') == 'baseline' and values['phase'] == TINY_PHASES:
    values['phase'] = tuple(p.replace(' reconstruct=1', '')
                            for p in TINY_PHASES)
  return values


def tiny_train_config(data, run_dir, **overrides):
  """A TrainConfig built through config.build, as the CLI builds it."""
  from lmid_tf import config
  return config.build(tiny_settings(data, run_dir, **overrides))


@pytest.fixture(scope='session')
def trained_landmark_model(tmp_path_factory, tiny_dataset):
  """A landmark predictor trained for a few steps at 32 px: its .keras path
  (preprocess.json beside it)."""
  from lmid_tf import train_landmarks
  run_dir = str(tmp_path_factory.mktemp('landmarks'))
  train_landmarks.train_landmarks(tiny_train_config(
      tiny_dataset, run_dir, steps_per_epoch=3,
      phase=('a trains=all lr=3e-3 epochs=1',)))
  return os.path.join(run_dir, 'landmark_model.keras')


def kill_rng():
  """A random.Random for choosing where to SIGKILL a run, and its seed:
  printed, and taken from $LMID_KILL_SEED when set, so that a failing kill
  point can be replayed (`LMID_KILL_SEED=... pytest ...`)."""
  import random
  seed = int(os.environ.get('LMID_KILL_SEED') or random.SystemRandom()
             .randrange(2**32))
  print(f'kill point seed: LMID_KILL_SEED={seed}', flush=True)
  return seed, random.Random(seed)

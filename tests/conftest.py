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

  It has the landmark pooling branch and falloff heatmaps, so the export,
  serving and identification tests that use it cover them too (the training
  tests cover the paper's plain network).
  """
  from lmid_tf import train
  run_dir = str(tmp_path_factory.mktemp('run'))
  cfg = tiny_train_config(tiny_dataset, run_dir, landmark_pooling_bins=4,
                          falloff=0.5)
  train.train(cfg)
  return run_dir


def tiny_train_config(data, run_dir, variant='landmark_id', phases=None,
                      steps=2, landmark_pooling_bins=0, falloff=0.0):
  """A TrainConfig for 32-px tests: light backbone, few steps."""
  from lmid_tf import augment, model, objective, pipeline, preprocess
  from lmid_tf import records, schedule, train
  metadata = records.read_metadata(data)
  k = metadata.num_landmarks if variant == 'landmark_id' else 0
  phases = phases or (
      schedule.Phase('stage1', ('all',), 1e-3, 1),
      schedule.Phase('stage2', ('all',), 1e-4, 1, reconstruct=bool(k)))
  return train.TrainConfig(
      data=data, run_dir=run_dir,
      model=model.ModelConfig(
          num_classes=metadata.splits['train']['num_classes'], image_size=32,
          channels=metadata.channels, num_landmarks=k,
          backbone='mobilenet_v2_0.35', embedding_dim=32, init='none',
          reconstruction=any(p.reconstruct for p in phases),
          landmark_pooling_bins=landmark_pooling_bins),
      preprocess=preprocess.PreprocessConfig(
          image_size=32, channels=metadata.channels, num_landmarks=k,
          falloff=falloff),
      inputs=pipeline.TrainInputConfig(
          identities_per_batch=4, images_per_identity=2,
          augmentation=augment.AugmentConfig()),
      losses=objective.LossConfig(),
      phases=tuple(phases), steps_per_epoch=steps, eval_every=0,
      eval_batch_size=32)

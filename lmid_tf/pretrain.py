r"""Pretrains a backbone on other identities, for `--init=PATH`.

  python -m data_tools.make_synthetic --out=data/pretrain --seed=1
  python -m lmid_tf.pretrain --flagfile=configs/pretrain_cpu.flags \
      --data=data/pretrain/tfrecords --run_dir=runs/pretrain

The paper starts from ImageNet weights, which cannot be downloaded on every
machine. This trains the image-only network (the baseline variant, whatever
--variant says) on a dataset whose identities the benchmark never sees --
for the synthetic protocol, make_synthetic with another --seed -- and writes
`<run_dir>/backbone.weights.h5`: the backbone with 3 input channels, as
`--init=PATH` expects (layers matched by name; the first conv, which then
takes C + k channels, is left random as with ImageNet weights).
"""

import dataclasses
import os

from absl import app
from absl import flags
import keras

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf import config
from lmid_tf import files
from lmid_tf.modeling import model as model_lib
from lmid_tf import train
from lmid_tf.evaluation import metrics as metrics_lib

WEIGHTS_FILE = 'backbone.weights.h5'


def backbone_weights(net: keras.Model, cfg: model_lib.ModelConfig,
                     path: str) -> list:
  """Writes `net`'s backbone as a 3-channel backbone's weights file.

  Returns the layers left at their random start (the first conv when the
  trained network did not see 3 channels).
  """
  trained = net.get_layer('backbone')
  reference = model_lib.BACKBONES[cfg.backbone][0](
      include_top=False, weights=None,
      input_shape=(cfg.image_size, cfg.image_size, 3), name='backbone',
      **model_lib.BACKBONES[cfg.backbone][1])
  skipped = model_lib.copy_weights_by_name(trained, reference)
  with files.replacing(path, '.weights.h5') as tmp:
    reference.save_weights(tmp)
  return skipped


def pretrain(cfg: config.TrainConfig) -> str:
  """Trains cfg (as the baseline) and writes the backbone weights."""
  metrics = train.train(cfg)
  print(f'pretrain: on its own test identities: '
        f'{metrics_lib.format_results(metrics)}')
  embedder = keras.saving.load_model(
      os.path.join(cfg.run_dir, artifacts.EMBEDDING_MODEL))
  path = os.path.join(cfg.run_dir, WEIGHTS_FILE)
  backbone_weights(embedder, cfg.model, path)
  return path


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.data or not FLAGS.run_dir:
    raise app.UsageError('--data and --run_dir are required')
  settings = dataclasses.replace(config.from_flags(FLAGS), variant='baseline',
                                 align=False)
  path = pretrain(config.build(settings))
  print(f'pretrain: wrote {path} (use --init={path} --backbone='
        f'{settings.backbone} --image_size={settings.image_size})')


if __name__ == '__main__':
  config.define_flags()
  cli.run(main, 'pretrain')

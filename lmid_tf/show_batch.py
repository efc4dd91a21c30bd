r"""Writes a grid of training inputs, exactly as a training config makes them.

  python -m lmid_tf.show_batch --flagfile=configs/demo.flags \
      --data=data/synthetic/tfrecords --out=batch.png

Takes the same flags (and flagfiles) as lmid_tf.train, so the picture shows
that config's augmentation, NLA/MLA and heatmaps: one row per identity of the
first P x K batch, heatmap channels in colour. If the blobs do not sit on the
same body parts in every tile, the landmarks or the augmentation are wrong.
"""

from absl import app
from absl import flags
import numpy as np

from lmid_tf import cli
from lmid_tf import config
from lmid_tf.data import overlay
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess


def render_batch(cfg: config.TrainConfig, max_rows: int = 0,
                 scale: int = 2) -> np.ndarray:
  """The first training batch as a BGR uint8 grid, one row per identity."""
  inputs, _ = next(iter(pipeline.train_dataset(cfg.data, cfg.preprocess,
                                               cfg.inputs)))
  pre = cfg.preprocess
  images = preprocess.denormalise(inputs['image'], pre.channels).numpy()
  maps = inputs['heatmaps'].numpy() if 'heatmaps' in inputs else None
  k = cfg.inputs.images_per_identity
  count = len(images) if not max_rows else min(len(images), max_rows * k)
  tiles = []
  for i in range(count):
    tile = overlay.colourise(images[i], None if maps is None else maps[i])
    tiles.append(np.kron(tile, np.ones((scale, scale, 1), np.uint8)))
  return overlay.grid(tiles, k)


FLAGS = flags.FLAGS


def define_flags():
  config.define_flags()
  flags.DEFINE_string('out', 'batch.png', 'Output PNG.')
  flags.DEFINE_integer('max_rows', 8, 'Identities shown (0: the whole batch).')


def main(argv):
  del argv
  if not FLAGS.data:
    raise app.UsageError('--data is required')
  cfg = config.build(config.from_flags(FLAGS), require_phases=False)
  overlay.write_png(FLAGS.out, render_batch(cfg, FLAGS.max_rows))
  shown = min(cfg.inputs.identities_per_batch, FLAGS.max_rows or 10**9)
  print(f'show_batch: wrote {FLAGS.out} ({shown} identities x '
        f'{cfg.inputs.images_per_identity} images; rotation '
        f'{cfg.inputs.augmentation.max_rotation:g} deg, zoom '
        f'{cfg.inputs.augmentation.max_zoom:g}, heatmap radius '
        f'{cfg.preprocess.radius:g}, falloff {cfg.preprocess.falloff:g})')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'show_batch')

r"""Writes a grid of augmented training inputs with their heatmaps overlaid.

  python -m lmid_tf.show_batch --data=data/synthetic/tfrecords --out=batch.png

Each landmark channel has its own colour; if the blobs do not sit on the same
body parts in every tile, the landmarks or the augmentation are wrong.
"""

import sys

from absl import app
from absl import flags
import numpy as np

from lmid_tf import augment
from lmid_tf import overlay
from lmid_tf import pipeline
from lmid_tf import preprocess
from lmid_tf import records


def render_batch(data_dir: str, pre: preprocess.PreprocessConfig,
                 cfg: pipeline.TrainInputConfig, scale: int = 2) -> np.ndarray:
  """One training batch as a BGR uint8 grid, one row per identity."""
  inputs, _ = next(iter(pipeline.train_dataset(data_dir, pre, cfg)))
  images = preprocess.denormalise(inputs['image'], pre.channels).numpy()
  maps = inputs['heatmaps'].numpy() if 'heatmaps' in inputs else None
  tiles = []
  for i in range(len(images)):
    tile = overlay.colourise(images[i], None if maps is None else maps[i])
    tiles.append(np.kron(tile, np.ones((scale, scale, 1), np.uint8)))
  return overlay.grid(tiles, cfg.images_per_identity)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('data', None, 'Dataset folder written by '
                      'data_tools.convert.')
  flags.DEFINE_string('out', 'batch.png', 'Output PNG.')
  flags.DEFINE_integer('image_size', 128, 'Model input side.')
  flags.DEFINE_float('heatmap_radius', 0.05, 'Blob radius, fraction of size.')
  flags.DEFINE_float('heatmap_falloff', 0.0, 'Linear ramp beyond the blob, '
                     'fraction of size (0: the paper\'s disk).')
  flags.DEFINE_integer('identities_per_batch', 4, 'P: rows in the grid.')
  flags.DEFINE_integer('images_per_identity', 4, 'K: columns in the grid.')
  flags.DEFINE_bool('nla', True, 'Noisy landmark augmentation.')
  flags.DEFINE_bool('mla', True, 'Missing landmark augmentation.')
  flags.DEFINE_integer('mla_min_visible', 2, 'MLA: minimum visible landmarks.')
  flags.DEFINE_integer('seed', 0, 'Seed of the batch drawn.')


def main(argv):
  del argv
  if not FLAGS.data:
    raise app.UsageError('--data is required')
  try:
    metadata = records.read_metadata(FLAGS.data)
    pre = preprocess.PreprocessConfig(
        image_size=FLAGS.image_size, channels=metadata.channels,
        num_landmarks=metadata.num_landmarks, radius=FLAGS.heatmap_radius,
        falloff=FLAGS.heatmap_falloff)
    cfg = pipeline.TrainInputConfig(
        identities_per_batch=FLAGS.identities_per_batch,
        images_per_identity=FLAGS.images_per_identity,
        augmentation=augment.AugmentConfig(), nla=FLAGS.nla, mla=FLAGS.mla,
        mla_min_visible=FLAGS.mla_min_visible, seed=FLAGS.seed)
    picture = render_batch(FLAGS.data, pre, cfg)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'show_batch: error: {e}')
  overlay.write_png(FLAGS.out, picture)
  print(f'show_batch: wrote {FLAGS.out} ({FLAGS.identities_per_batch} '
        f'identities x {FLAGS.images_per_identity} images; landmarks '
        f'{", ".join(metadata.landmark_names)})')


if __name__ == '__main__':
  define_flags()
  app.run(main)

r"""Input-pipeline throughput vs. the training step it feeds.

  python -m benchmarks.input_pipeline --size=128 --batch=64
  python -m benchmarks.input_pipeline --photo_side=3000 --backbone=small_cnn

With --photo_side, the set is camera-sized colour JPEGs (synthetic animals
enlarged to photo_side x 2/3 photo_side, with sensor noise) in a folder per
individual, identity-only (K = 0, the baseline): converted once with the
full photo stored (--store_size=0, what conversion did before) and once at
the default store size, each timed through the baseline's training
pipeline, against the baseline's training step.

Times parse -> decode -> augment -> NLA/MLA -> heatmaps (the training
pipeline, P x K batches) at --size, for k=3 and k=5 landmarks, on a
synthetic set it generates; then a ResNet50 Landmark-Id training step at the
same size and batch. The pipeline should be >= 10x the step rate so it
never limits training.
"""

import csv
import datetime
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import cv2
import numpy as np

from benchmarks import machine
from benchmarks import train_step
from data_tools import convert
from data_tools import make_synthetic
from lmid_tf import config
from lmid_tf.data import pipeline


def make_data(folder: str, identities: int, num_landmarks: int) -> str:
  """A synthetic set with 3 landmarks, or 5 (adding two edge midpoints)."""
  cfg = make_synthetic.DatasetConfig(out=folder, identities=identities,
                                     workers=os.cpu_count() or 1,
                                     progress=False)
  path = make_synthetic.generate(cfg)
  if num_landmarks == 5:
    with open(path) as f:
      rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    header += ['mid_ab_x', 'mid_ab_y', 'mid_ac_x', 'mid_ac_y']
    for row in rows:
      a, b, c = ([float(v) if v else None for v in row[3 + 3 * i:5 + 3 * i]]
                 for i in range(3))
      for other in (b, c):
        if None in a or None in other:
          row += ['', '']
        else:
          row += [f'{(a[0] + other[0]) / 2:.3f}', f'{(a[1] + other[1]) / 2:.3f}']
    path = os.path.join(folder, 'annotations5.csv')
    with open(path, 'w', newline='') as f:
      csv.writer(f).writerows([header] + rows)
  out = os.path.join(folder, f'tfrecords{num_landmarks}')
  convert.convert(convert.ConvertConfig(annotations=path, out=out,
                                        split_column='split', strict=True,
                                        progress=False))
  return out


def make_photos(folder: str, identities: int, side: int,
                per_identity: int = 4) -> str:
  """Camera-sized JPEGs in <folder>/photos/<identity>/: synthetic animals
  enlarged to side x (2/3 side), tinted to colour, with sensor noise so they
  compress like photos (~1 MB at 3000 px). Returns the folder."""
  cfg = make_synthetic.DatasetConfig(
      out=os.path.join(folder, 'synthetic'), identities=identities,
      train_images=per_identity, gallery_images=0, query_images=0,
      workers=os.cpu_count() or 1, progress=False)
  path = make_synthetic.generate(cfg)
  with open(path) as f:
    rows = [r for r in csv.DictReader(f) if r['split'] == 'train']
  rng = np.random.default_rng(0)
  root = os.path.join(folder, 'photos')
  tint = np.array([0.8, 1.0, 1.15])
  for row in rows:
    gray = cv2.imread(os.path.join(cfg.out, row['path']), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(gray, (side, side * 2 // 3),
                     interpolation=cv2.INTER_CUBIC).astype(np.float32)
    photo = big[:, :, None] * tint + rng.normal(0, 4, big.shape + (3,))
    os.makedirs(os.path.join(root, row['identity']), exist_ok=True)
    name = os.path.splitext(os.path.basename(row['path']))[0] + '.jpg'
    cv2.imwrite(os.path.join(root, row['identity'], name),
                np.clip(photo, 0, 255).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
  return root


def convert_photos(root: str, out: str, store_size: int) -> int:
  """Converts the photo folder (all train); returns the shards' bytes."""
  convert.convert(convert.ConvertConfig(images=root, out=out,
                                        test_fraction=0.0,
                                        store_size=store_size,
                                        progress=False))
  return sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
             if f.endswith('.tfrecord'))


def pipeline_rate(data: str, size: int, batch: int, batches: int,
                  variant: str = 'landmark_id') -> float:
  cfg = config.build(config.Settings(
      data=data, image_size=size, identities_per_batch=batch // 4,
      images_per_identity=4, mla_min_visible=2, variant=variant),
      require_phases=False)
  iterator = iter(pipeline.train_dataset(data, cfg.preprocess, cfg.inputs))
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batch * batches / (time.perf_counter() - start)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer('size', 128, 'Model input side.')
  flags.DEFINE_integer('batch', 64, 'Batch size (P = batch / 4, K = 4).')
  flags.DEFINE_integer('batches', 30, 'Timed batches.')
  flags.DEFINE_integer('identities', 100, 'Synthetic identities per split.')
  flags.DEFINE_string('backbone', 'resnet50', 'Backbone of the timed step.')
  flags.DEFINE_integer('photo_side', 0, 'Time camera-sized JPEGs this wide '
                       '(identity-only, the baseline) instead of the '
                       'synthetic 128 px PNGs with landmarks; 0: the latter.')


def main(argv):
  del argv
  print('command: python -m benchmarks.input_pipeline ' + ' '.join(sys.argv[1:]))
  print(f'date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} '
        f'UTC; {machine.describe()}')
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    if FLAGS.photo_side:
      root = make_photos(folder, FLAGS.identities, FLAGS.photo_side)
      for store_size in (0, convert.DEFAULT_STORE_SIZE):
        data = os.path.join(folder, f'stored{store_size}')
        megabytes = convert_photos(root, data, store_size) / 1e6
        rows.append((f'pipeline store_size={store_size} ({megabytes:.0f} MB)',
                     pipeline_rate(data, FLAGS.size, FLAGS.batch,
                                   FLAGS.batches, variant='baseline')))
      landmarks = 0
    else:
      for k in (3, 5):
        data = make_data(folder, FLAGS.identities, k)
        rows.append((f'pipeline k={k}',
                     pipeline_rate(data, FLAGS.size, FLAGS.batch,
                                   FLAGS.batches)))
      landmarks = 3
  rows.append((f'{FLAGS.backbone} train step k={landmarks}',
               train_step.step_rate(FLAGS.backbone, FLAGS.size, FLAGS.batch,
                                    landmarks=landmarks, steps=3)))
  print(f'{"what":36} {"size":>5} {"batch":>6} {"img/s":>8}')
  for name, rate in rows:
    print(f'{name:36} {FLAGS.size:>5} {FLAGS.batch:>6} {rate:8.1f}')
  for name, rate in rows[:2]:
    print(f'{name} / step: {rate / rows[2][1]:.1f}x')


if __name__ == '__main__':
  define_flags()
  app.run(main)

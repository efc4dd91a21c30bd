r"""Input-pipeline throughput vs. the training step it feeds.

  python -m benchmarks.input_pipeline --size=128 --batch=64

Times parse -> decode -> augment -> NLA/MLA -> heatmaps (the training
pipeline, P x K batches) at --size, for k=3 and k=5 landmarks, on a
synthetic set it generates; then a ResNet50 Landmark-Id training step at the
same size and batch. The pipeline should be >= 10x the step rate so it
never limits training.
"""

import csv
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

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


def pipeline_rate(data: str, size: int, batch: int, batches: int) -> float:
  cfg = config.build(config.Settings(
      data=data, image_size=size, identities_per_batch=batch // 4,
      images_per_identity=4, mla_min_visible=2), require_phases=False)
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


def main(argv):
  del argv
  print('command: python -m benchmarks.input_pipeline ' + ' '.join(sys.argv[1:]))
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    for k in (3, 5):
      data = make_data(folder, FLAGS.identities, k)
      rows.append((f'pipeline k={k}',
                   pipeline_rate(data, FLAGS.size, FLAGS.batch,
                                 FLAGS.batches)))
  rows.append((f'{FLAGS.backbone} train step k=3',
               train_step.step_rate(FLAGS.backbone, FLAGS.size, FLAGS.batch,
                                    steps=3)))
  print(f'{"what":28} {"size":>5} {"batch":>6} {"img/s":>8}')
  for name, rate in rows:
    print(f'{name:28} {FLAGS.size:>5} {FLAGS.batch:>6} {rate:8.1f}')
  print(f'pipeline / step: {min(r for _, r in rows[:2]) / rows[2][1]:.1f}x')


if __name__ == '__main__':
  define_flags()
  app.run(main)

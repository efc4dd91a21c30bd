r"""Throughput of the synthetic generator and the converter (images/s).

  python -m benchmarks.data_tools --identities=750 --out=data/synthetic

Generates the dataset (default: the paper's 750 identities per split,
3/3/5 images, 128 px) with all cores, then converts it; prints a table.
Leaves the dataset in --out for training.
"""

import os
import shutil
import sys
import time

from absl import app
from absl import flags

from data_tools import convert
from data_tools import make_synthetic
from data_tools import synthetic

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer('identities', 750, 'Identities per split.')
  flags.DEFINE_integer('size', 128, 'Image side.')
  flags.DEFINE_string('out', 'data/synthetic', 'Dataset folder (replaced).')
  flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Processes/threads.')


def main(argv):
  del argv
  print('command: python -m benchmarks.data_tools ' + ' '.join(sys.argv[1:]))
  shutil.rmtree(FLAGS.out, ignore_errors=True)
  cfg = make_synthetic.DatasetConfig(
      out=FLAGS.out, identities=FLAGS.identities, workers=FLAGS.workers,
      synth=synthetic.SynthConfig(size=FLAGS.size), progress=False)
  start = time.perf_counter()
  annotations = make_synthetic.generate(cfg)
  generate_seconds = time.perf_counter() - start
  images = FLAGS.identities * (cfg.train_images + cfg.gallery_images +
                               cfg.query_images)
  start = time.perf_counter()
  convert.convert(convert.ConvertConfig(
      annotations=annotations, out=os.path.join(FLAGS.out, 'tfrecords'),
      split_column='split', strict=True, workers=FLAGS.workers,
      progress=False))
  convert_seconds = time.perf_counter() - start
  print(f'{"step":12} {"images":>8} {"seconds":>8} {"img/s":>8}')
  for name, seconds in (('generate', generate_seconds),
                        ('convert', convert_seconds)):
    print(f'{name:12} {images:>8} {seconds:8.1f} {images / seconds:8.1f}')


if __name__ == '__main__':
  define_flags()
  app.run(main)

r"""Generates the paper's synthetic re-identification dataset (§4.1.1).

  python -m data_tools.make_synthetic --out=data/synthetic

Writes what a user with real photos would bring -- `<out>/images/...` and
`<out>/annotations.csv` (pixel coordinates, a `split` column) -- and then
converts it with data_tools.convert into `<out>/tfrecords`, so synthetic and
real data take the same path. Also writes `<out>/contact_sheet.png`.

Splits: `train` identities are disjoint from the `gallery`/`query` ones,
which share theirs. Output is deterministic for a --seed, whatever --workers.
"""

import csv
import dataclasses
import multiprocessing
import os
import shutil
import sys

from absl import app
from absl import flags
import cv2
import numpy as np
import tqdm

from data_tools import convert
from data_tools import synthetic
from lmid_tf import cli
from lmid_tf import files

LANDMARK_COLOURS = ((0, 0, 255), (0, 200, 0), (255, 0, 0))  # BGR


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  out: str
  identities: int = 750          # per split: train, and gallery/query
  train_images: int = 3
  gallery_images: int = 3
  query_images: int = 5
  seed: int = 0
  backgrounds_dir: str = ''
  workers: int = 1
  synth: synthetic.SynthConfig = synthetic.SynthConfig()
  progress: bool = True




def _load_photos(directory: str) -> list:
  if not directory:
    return []
  photos = []
  for name in sorted(os.listdir(directory)):
    image = cv2.imread(os.path.join(directory, name), cv2.IMREAD_GRAYSCALE)
    if image is not None and min(image.shape) >= 16:
      photos.append(image)
  if not photos:
    raise ValueError(f'--backgrounds_dir {directory}: no readable images of '
                     'at least 16x16 pixels')
  return photos


_PHOTOS = []


def _init_worker(backgrounds_dir):
  _PHOTOS[:] = _load_photos(backgrounds_dir)


def _identity_task(args):
  """Renders every example of one identity; returns CSV rows."""
  cfg, index, splits = args
  # One generator per identity and example, keyed by the seed, so results do
  # not depend on which worker runs what.
  pattern = synthetic.seed_pattern(
      np.random.default_rng([cfg.seed, index, 0]), cfg.synth)
  rows = []
  example = 0
  for split, count in splits:
    for _ in range(count):
      example += 1
      rng = np.random.default_rng([cfg.seed, index, example])
      hard_rng = np.random.default_rng([cfg.seed, index, example, 1])
      image, points, visible = synthetic.render_example(
          pattern, rng, cfg.synth, _PHOTOS, hard_rng)
      rel = os.path.join('images', split, f'id{index:05d}_{example:02d}.png')
      cv2.imwrite(os.path.join(cfg.out, rel), image)
      row = [rel, f'id{index:05d}', split]
      for (x, y), vis in zip(points, visible):
        row += [f'{x:.3f}', f'{y:.3f}', '1'] if vis else ['', '', '0']
      rows.append(row)
  return index, rows


def generate(cfg: DatasetConfig) -> str:
  """Writes images and annotations.csv; returns the CSV path."""
  for split in ('train', 'gallery', 'query'):
    os.makedirs(os.path.join(cfg.out, 'images', split), exist_ok=True)
  tasks = [(cfg, i, (('train', cfg.train_images),))
           for i in range(cfg.identities)]
  tasks += [(cfg, i, (('gallery', cfg.gallery_images),
                      ('query', cfg.query_images)))
            for i in range(cfg.identities, 2 * cfg.identities)]
  results = {}
  # tqdm's disable=None: bars on a terminal only (in a log they are screens
  # of carriage returns).
  quiet = None if cfg.progress else True
  if cfg.workers > 1:
    with multiprocessing.get_context('spawn').Pool(
        cfg.workers, _init_worker, (cfg.backgrounds_dir,)) as pool:
      for index, rows in tqdm.tqdm(
          pool.imap_unordered(_identity_task, tasks, chunksize=8),
          total=len(tasks), desc='rendering identities',
          disable=quiet):
        results[index] = rows
  else:
    _init_worker(cfg.backgrounds_dir)
    for task in tqdm.tqdm(tasks, desc='rendering identities',
                          disable=quiet):
      index, rows = _identity_task(task)
      results[index] = rows
  header = ['path', 'identity', 'split']
  for name in synthetic.LANDMARK_NAMES:
    header += [f'{name}_x', f'{name}_y', f'{name}_visible']
  path = os.path.join(cfg.out, 'annotations.csv')
  with files.replacing(path) as tmp, open(tmp, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for index in sorted(results):
      writer.writerows(results[index])
  return path


def contact_sheet(cfg: DatasetConfig, num_identities: int = 4,
                  scale: int = 2) -> np.ndarray:
  """Like the paper's Figure 5: per row, the seed pattern then examples.

  The triangle and landmark dots are drawn for checking only; they are not in
  the dataset images.
  """
  rows = []
  for index in range(num_identities):
    pattern = synthetic.seed_pattern(
        np.random.default_rng([cfg.seed, index, 0]), cfg.synth)
    seed_image = (1 - synthetic.pattern_mask(pattern, cfg.synth.size)) * 255
    tiles = [_annotate(seed_image.astype(np.uint8),
                       synthetic.CANONICAL_CORNERS * cfg.synth.size,
                       [True] * 3, scale, triangle=True)]
    with open(os.path.join(cfg.out, 'annotations.csv')) as f:
      reader = csv.reader(f)
      next(reader)
      for row in reader:
        if row[1] != f'id{index:05d}':
          continue
        image = cv2.imread(os.path.join(cfg.out, row[0]), cv2.IMREAD_GRAYSCALE)
        points, visible = [], []
        for k in range(3):
          x, y, vis = row[3 + 3 * k:6 + 3 * k]
          visible.append(vis == '1')
          points.append((float(x), float(y)) if vis == '1' else (0.0, 0.0))
        tiles.append(_annotate(image, np.array(points), visible, scale))
        if len(tiles) == 4:
          break
    rows.append(np.concatenate(tiles, axis=1))
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                 constant_values=255) for r in rows]
  return np.concatenate(rows, axis=0)


def _annotate(gray, points, visible, scale, triangle=False):
  image = cv2.resize(gray, None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_NEAREST)
  image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
  pts = np.round(np.asarray(points) * scale).astype(int)
  if triangle:
    cv2.polylines(image, [pts.reshape(-1, 1, 2)], True, (160, 160, 160), 1)
  for (x, y), vis, colour in zip(pts, visible, LANDMARK_COLOURS):
    if vis:
      cv2.circle(image, (int(x), int(y)), 3 * scale, colour, -1, cv2.LINE_AA)
  return cv2.copyMakeBorder(image, 2, 2, 2, 2, cv2.BORDER_CONSTANT,
                            value=(255, 255, 255))


FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a program, so importing never clashes."""
  flags.DEFINE_string('out', None, 'Output folder (images/, annotations.csv, '
                      'tfrecords/, contact_sheet.png).')
  flags.DEFINE_integer('identities', 750, 'Identities in train, and in '
                       'gallery/query (which share theirs).')
  flags.DEFINE_integer('train_images', 3, 'Images per train identity.')
  flags.DEFINE_integer('gallery_images', 3, 'Gallery images per test identity.')
  flags.DEFINE_integer('query_images', 5, 'Query images per test identity.')
  flags.DEFINE_integer('size', 128, 'Image side in pixels.')
  flags.DEFINE_integer('seed', 0, 'Seed: the same seed gives the same dataset.')
  flags.DEFINE_enum('variant', 'paper', ['paper', 'hard', 'body'], 'paper: '
                    "the paper's rigid planar patterns (§4.1.1), body "
                    'unseen; hard: also non-rigid deformation of the '
                    'pattern, an occluder over part of the body and uneven '
                    'lighting; body: the body drawn (a textured triangle '
                    'with a round head at the apex, whose corners are the '
                    'landmarks), partly occluded.')
  flags.DEFINE_string('backgrounds_dir', '', 'Optional folder of photos to '
                      'crop background and pattern textures from; default: '
                      'procedural noise textures.')
  flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Rendering processes.')
  flags.DEFINE_bool('overwrite', False, 'Replace --out if it exists.')


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError('--out is required')
  if os.path.exists(FLAGS.out):
    if not FLAGS.overwrite:
      sys.exit(f'make_synthetic: error: {FLAGS.out} exists; pass --overwrite')
    shutil.rmtree(FLAGS.out)
  cfg = DatasetConfig(
      out=FLAGS.out, identities=FLAGS.identities,
      train_images=FLAGS.train_images, gallery_images=FLAGS.gallery_images,
      query_images=FLAGS.query_images, seed=FLAGS.seed,
      backgrounds_dir=FLAGS.backgrounds_dir, workers=FLAGS.workers,
      synth=synthetic.SynthConfig(
          size=FLAGS.size,
          **{'hard': synthetic.HARD, 'body': synthetic.BODY}.get(
              FLAGS.variant, {})))
  _load_photos(cfg.backgrounds_dir)   # bad photos fail before any work
  annotations = generate(cfg)
  cv2.imwrite(os.path.join(cfg.out, 'contact_sheet.png'), contact_sheet(cfg))
  summary = convert.convert(convert.ConvertConfig(
      annotations=annotations, out=os.path.join(cfg.out, 'tfrecords'),
      split_column='split', strict=True, workers=cfg.workers))
  print(convert.format_summary(summary))
  print(f'make_synthetic: wrote {cfg.out}/tfrecords and '
        f'{cfg.out}/contact_sheet.png')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'make_synthetic', errors=(convert.ConversionError,))

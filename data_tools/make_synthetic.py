r"""Generates the paper's synthetic re-identification dataset (§4.1.1).

  python -m data_tools.make_synthetic --out=data/synthetic
  python -m data_tools.make_synthetic --out=data/manta --variant=manta

`--variant=manta` renders the paper's real-data regime instead (§4.1.2,
data_tools/manta.py, docs/MANTA.md): five landmarks, bending bodies, and
its protocol -- 110 train identities, 18 test identities, the gallery the
train set plus two images of each test identity -- and prints the share of
images with 5, 4 and <= 3 visible landmarks.

Writes what a user with real photos would bring -- `<out>/images/...` and
`<out>/annotations.csv` (pixel coordinates, a `split` column) -- and then
converts it with data_tools.convert into `<out>/tfrecords`, so synthetic and
real data take the same path. Also writes `<out>/contact_sheet.png`.

Splits: `train` identities are disjoint from the `gallery`/`query` ones,
which share theirs (for manta the gallery also holds the train images). Output is deterministic for a --seed, whatever --workers.
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
from data_tools import manta
from data_tools import synthetic
from lmid_tf import cli
from lmid_tf import files

LANDMARK_COLOURS = ((0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 220, 255),
                    (255, 0, 255))  # BGR
VARIANTS = ('paper', 'hard', 'body', 'manta')
# Each variant's protocol: identities (train; test unless test_identities),
# images per train / gallery / query identity.
PROTOCOLS = {
    'paper': dict(identities=750, train_images=3, gallery_images=3,
                  query_images=5),
    # §4.1.2: 110 train identities with 1,422 images (12.9 each), 18 test
    # identities with 321 (17.8 each: 2 to the gallery, the rest queries).
    'manta': dict(identities=110, test_identities=18, train_images=13,
                  gallery_images=2, query_images=16),
}


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
  # 'manta' renders data_tools/manta.py's rays with `ray` (its size is
  # synth.size); the others synthetic.py's patterns with `synth`.
  variant: str = 'paper'
  ray: manta.MantaConfig = manta.MantaConfig()
  test_identities: int = 0       # 0: as many as `identities`

  @property
  def num_test(self) -> int:
    return self.test_identities or self.identities

  @property
  def gallery_includes_train(self) -> bool:
    """§4.1.2's gallery: the train set plus the test identities' picks."""
    return self.variant == 'manta'

  @property
  def landmark_names(self) -> tuple:
    return manta.LANDMARK_NAMES if self.variant == 'manta' else (
        synthetic.LANDMARK_NAMES)




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
  render = _renderer(cfg, index)
  rows = []
  example = 0
  for split, count in splits:
    for _ in range(count):
      example += 1
      rng = np.random.default_rng([cfg.seed, index, example])
      hard_rng = np.random.default_rng([cfg.seed, index, example, 1])
      image, points, visible = render(rng, hard_rng)
      rel = os.path.join('images', split, f'id{index:05d}_{example:02d}.png')
      cv2.imwrite(os.path.join(cfg.out, rel), image)
      row = [rel, f'id{index:05d}', split]
      for (x, y), vis in zip(points, visible):
        row += [f'{x:.3f}', f'{y:.3f}', '1'] if vis else ['', '', '0']
      rows.append(row)
  return index, rows


def _manta_config(cfg: DatasetConfig) -> manta.MantaConfig:
  return dataclasses.replace(cfg.ray, size=cfg.synth.size)


def _renderer(cfg: DatasetConfig, index: int):
  """(rng, hard_rng) -> (image, landmarks, visible) for identity `index`."""
  identity_rng = np.random.default_rng([cfg.seed, index, 0])
  if cfg.variant == 'manta':
    ray = _manta_config(cfg)
    layers = manta.canonical_layers(manta.seed_identity(identity_rng, ray),
                                    2 * ray.size)

    def render(rng, hard_rng):
      del hard_rng
      image, points, visible = manta.render_example(layers, rng, ray)
      return cv2.cvtColor(image, cv2.COLOR_RGB2BGR), points, visible
    return render
  pattern = synthetic.seed_pattern(identity_rng, cfg.synth)
  return lambda rng, hard_rng: synthetic.render_example(
      pattern, rng, cfg.synth, _PHOTOS, hard_rng)


def _canonical_tile(cfg: DatasetConfig, index: int) -> tuple:
  """The identity's seed, as the paper's Figure 5 shows it: (BGR or gray
  uint8 image, [K, 2] landmark pixels)."""
  size = cfg.synth.size
  identity_rng = np.random.default_rng([cfg.seed, index, 0])
  if cfg.variant == 'manta':
    colour, alpha = manta.canonical_layers(
        manta.seed_identity(identity_rng, _manta_config(cfg)), size)
    flat = colour + 0.45 * (1 - alpha[..., None])
    image = cv2.cvtColor(np.round(flat * 255).astype(np.uint8),
                         cv2.COLOR_RGB2BGR)
    return image, manta.CANONICAL_LANDMARKS * size
  pattern = synthetic.seed_pattern(identity_rng, cfg.synth)
  image = (1 - synthetic.pattern_mask(pattern, size)) * 255
  return image.astype(np.uint8), synthetic.CANONICAL_CORNERS * size


def generate(cfg: DatasetConfig) -> str:
  """Writes images and annotations.csv; returns the CSV path."""
  for split in ('train', 'gallery', 'query'):
    os.makedirs(os.path.join(cfg.out, 'images', split), exist_ok=True)
  tasks = [(cfg, i, (('train', cfg.train_images),))
           for i in range(cfg.identities)]
  tasks += [(cfg, i, (('gallery', cfg.gallery_images),
                      ('query', cfg.query_images)))
            for i in range(cfg.identities, cfg.identities + cfg.num_test)]
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
  for name in cfg.landmark_names:
    header += [f'{name}_x', f'{name}_y', f'{name}_visible']
  path = os.path.join(cfg.out, 'annotations.csv')
  with files.replacing(path) as tmp, open(tmp, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for index in sorted(results):
      writer.writerows(results[index])
  return path


def visibility_mix(annotations: str) -> tuple:
  """(manta.visibility_mix of every image in the CSV, number of images)."""
  with open(annotations, newline='') as f:
    rows = list(csv.DictReader(f))
  counts = [sum(row[k] == '1' for k in row if k.endswith('_visible'))
            for row in rows]
  return manta.visibility_mix(counts), len(counts)


def contact_sheet(cfg: DatasetConfig, num_identities: int = 4,
                  scale: int = 2) -> np.ndarray:
  """Like the paper's Figure 5: per row, the seed pattern then examples.

  The triangle and landmark dots are drawn for checking only; they are not in
  the dataset images.
  """
  rows = []
  k = len(cfg.landmark_names)
  per_row = 6 if cfg.variant == 'manta' else 4
  for index in range(num_identities):
    seed_image, seed_points = _canonical_tile(cfg, index)
    tiles = [_annotate(seed_image, seed_points, [True] * k, scale,
                       triangle=cfg.variant != 'manta')]
    with open(os.path.join(cfg.out, 'annotations.csv')) as f:
      reader = csv.reader(f)
      next(reader)
      for row in reader:
        if row[1] != f'id{index:05d}':
          continue
        image = cv2.imread(os.path.join(cfg.out, row[0]), cv2.IMREAD_COLOR)
        points, visible = [], []
        for j in range(k):
          x, y, vis = row[3 + 3 * j:6 + 3 * j]
          visible.append(vis == '1')
          points.append((float(x), float(y)) if vis == '1' else (0.0, 0.0))
        tiles.append(_annotate(image, np.array(points), visible, scale))
        if len(tiles) == per_row:
          break
    rows.append(np.concatenate(tiles, axis=1))
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                 constant_values=255) for r in rows]
  return np.concatenate(rows, axis=0)


def _annotate(gray, points, visible, scale, triangle=False):
  image = cv2.resize(gray, None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_NEAREST)
  if image.ndim == 2:
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
  pts = np.round(np.asarray(points) * scale).astype(int)
  if triangle:
    cv2.polylines(image, [pts.reshape(-1, 1, 2)], True, (160, 160, 160), 1)
  radius = 3 * scale if len(pts) <= 3 else 2 * scale
  for (x, y), vis, colour in zip(pts, visible, LANDMARK_COLOURS):
    if vis:
      cv2.circle(image, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA)
  return cv2.copyMakeBorder(image, 2, 2, 2, 2, cv2.BORDER_CONSTANT,
                            value=(255, 255, 255))


FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a program, so importing never clashes."""
  flags.DEFINE_string('out', None, 'Output folder (images/, annotations.csv, '
                      'tfrecords/, contact_sheet.png).')
  flags.DEFINE_integer('identities', None, 'Train identities, and test '
                       '(gallery/query) identities unless --test_identities; '
                       'default: the variant\'s protocol (PROTOCOLS: 750, '
                       'manta 110).')
  flags.DEFINE_integer('test_identities', None, 'Test identities (gallery/'
                       'query); default: the protocol\'s (manta: 18; '
                       'others: --identities). More of them: lower '
                       'variance of the test metrics.')
  flags.DEFINE_integer('train_images', None, 'Images per train identity '
                       '(default: the protocol\'s, 3; manta 13).')
  flags.DEFINE_integer('gallery_images', None, 'Gallery images per test '
                       'identity (default 3; manta 2).')
  flags.DEFINE_integer('query_images', None, 'Query images per test '
                       'identity (default 5; manta 16).')
  flags.DEFINE_integer('size', 128, 'Image side in pixels.')
  flags.DEFINE_integer('seed', 0, 'Seed: the same seed gives the same dataset.')
  flags.DEFINE_enum('variant', 'paper', list(VARIANTS), 'paper: '
                    "the paper's rigid planar patterns (§4.1.1), body "
                    'unseen; hard: also non-rigid deformation of the '
                    'pattern, an occluder over part of the body and uneven '
                    'lighting; body: the body drawn (a textured triangle '
                    'with a round head at the apex, whose corners are the '
                    'landmarks), partly occluded; manta: rays with five '
                    'landmarks, bending, framed and occluded to the '
                    "paper's real-data visibility, and its protocol "
                    '(§4.1.2, docs/MANTA.md).')
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
  protocol = dict(PROTOCOLS['paper'], test_identities=0)
  protocol.update(PROTOCOLS.get(FLAGS.variant, {}))
  for name in protocol:
    if FLAGS[name].value is not None:
      protocol[name] = FLAGS[name].value
  cfg = DatasetConfig(
      out=FLAGS.out, seed=FLAGS.seed, backgrounds_dir=FLAGS.backgrounds_dir,
      workers=FLAGS.workers, variant=FLAGS.variant, **protocol,
      synth=synthetic.SynthConfig(
          size=FLAGS.size,
          **{'hard': synthetic.HARD, 'body': synthetic.BODY}.get(
              FLAGS.variant, {})))
  _load_photos(cfg.backgrounds_dir)   # bad photos fail before any work
  annotations = generate(cfg)
  cv2.imwrite(os.path.join(cfg.out, 'contact_sheet.png'), contact_sheet(cfg))
  summary = convert.convert(convert.ConvertConfig(
      annotations=annotations, out=os.path.join(cfg.out, 'tfrecords'),
      split_column='split', strict=True, workers=cfg.workers,
      gallery_includes_train=cfg.gallery_includes_train))
  print(convert.format_summary(summary))
  print(manta.format_mix(*visibility_mix(annotations)))
  print(f'make_synthetic: wrote {cfg.out}/tfrecords and '
        f'{cfg.out}/contact_sheet.png')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'make_synthetic', errors=(convert.ConversionError,))

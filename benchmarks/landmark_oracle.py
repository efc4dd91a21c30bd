r"""How much identity do the landmarks carry? A training-free measurement.

  python -m benchmarks.landmark_oracle --data=data/synthetic/tfrecords

On the synthetic set (whose landmarks are the corners of the canonical
triangle), ranks the gallery for every query with fixed descriptors:

* pixel correlation on the images as they are;
* pixel correlation on the images warped so that their three landmarks land
  on the canonical corners (the affine map the landmarks define); images
  with an invisible landmark stay unaligned;
* no warping, but a histogram of the pattern's ink over each pixel's
  distances to the three landmarks (divided by the landmarks' mean spacing):
  what pooling over distance-to-landmark channels can see, and unchanged by
  any rotation or translation of the image.

No learning is involved, so the gap between the first row and the others is
the identity information that the landmarks give and a model could use.
"""

import sys

from absl import app
from absl import flags
import cv2
import numpy as np

from data_tools import synthetic
from lmid_tf import config
from lmid_tf.data import pipeline
from lmid_tf.evaluation import embedding as embedding_lib
from lmid_tf.evaluation import metrics as metrics_lib

FLAGS = flags.FLAGS


def descriptors(split: dict, size: int, align: bool) -> np.ndarray:
  """[N, S*S] zero-mean unit-norm vectors of (aligned) blurred pattern ink."""
  canonical = (synthetic.CANONICAL_CORNERS * size).astype(np.float32)
  rows = []
  for image, landmarks, visible in zip(split['images'], split['landmarks'],
                                       split['visible']):
    ink = 1.0 - image[..., 0].astype(np.float32) / 255.0
    if align and visible.all():
      matrix = cv2.getAffineTransform(
          (landmarks * size - 0.5).astype(np.float32), canonical - 0.5)
      ink = cv2.warpAffine(ink, matrix, (size, size), flags=cv2.INTER_LINEAR)
    ink = cv2.GaussianBlur(ink, (0, 0), size / 64.0)
    vector = ink.ravel() - ink.mean()
    rows.append(vector / max(np.linalg.norm(vector), 1e-6))
  return np.stack(rows)


def distance_histograms(split: dict, size: int, bins: int = 8) -> np.ndarray:
  """[N, bins**3] unit vectors: ink mass binned by (d1, d2, d3) to landmarks."""
  ys, xs = (np.mgrid[:size, :size] + 0.5) / size
  rows = []
  for image, landmarks, visible in zip(split['images'], split['landmarks'],
                                       split['visible']):
    ink = 1.0 - image[..., 0].astype(np.float32) / 255.0
    ink = np.clip(ink - np.median(ink), 0, None)   # the background is lighter
    spacing = np.mean([np.hypot(*(landmarks[a] - landmarks[b]))
                       for a, b in ((0, 1), (1, 2), (0, 2))])
    distance = np.stack([np.hypot(xs - x, ys - y) * v for (x, y), v
                         in zip(landmarks, visible)], -1) / max(spacing, 1e-6)
    # Distances of up to 1.2 spacings cover the triangle; ink farther away
    # is background.
    index = (distance / 1.2 * bins).astype(int)
    near = np.all(index < bins, axis=-1)
    histogram = np.zeros((bins,) * 3)
    np.add.at(histogram, tuple(index[near][:, j] for j in range(3)), ink[near])
    vector = histogram.ravel()
    rows.append(vector / max(np.linalg.norm(vector), 1e-6))
  return np.stack(rows)


def main(argv):
  del argv
  print('command: python -m benchmarks.landmark_oracle '
        + ' '.join(sys.argv[1:]))
  pre = config.preprocess_config(config.Settings(image_size=FLAGS.size),
                                 channels=1, num_landmarks=3)
  # The evaluation pipeline's decoded images and landmarks, no model.
  no_model = lambda inputs: np.zeros([inputs['image'].shape[0], 1])
  splits = {name: embedding_lib.embed_split(no_model, pipeline.eval_dataset(
      FLAGS.data, name, pre, 256)) for name in ('gallery', 'query')}
  rows = (
      ('pixels, as they are', lambda s: descriptors(s, FLAGS.size, False)),
      ('pixels, landmark-aligned', lambda s: descriptors(s, FLAGS.size, True)),
      ('ink by landmark distances', lambda s: distance_histograms(s, FLAGS.size)),
  )
  print(f'{"fixed descriptor":28} {"top-1":>7} {"top-5":>7} {"top-10":>7} '
        f'{"mAP":>7}')
  for label, describe in rows:
    query, gallery = describe(splits['query']), describe(splits['gallery'])
    ranked = metrics_lib.ranking_metrics(
        metrics_lib.distance_matrix(query, gallery), splits['query']['labels'],
        splits['gallery']['labels'])
    cmc, mean_ap = ranked['cmc'], ranked['mAP']
    print(f'{label:28} {100 * cmc[0]:6.2f}% {100 * cmc[4]:6.2f}% '
          f'{100 * cmc[9]:6.2f}% {100 * mean_ap:6.2f}%', flush=True)


if __name__ == '__main__':
  flags.DEFINE_string('data', None, 'Synthetic dataset folder (TFRecords).')
  flags.DEFINE_integer('size', 64, 'Image side the comparison runs at.')
  flags.mark_flags_as_required(['data'])
  app.run(main)

r"""Identify individuals against a catalogue of known ones, open set.

  # 1. catalogue from a gallery (TFRecords, or photos + annotation CSV)
  python -m lmid_tf.identify index --model=runs/demo/embedding_model.keras \
      --gallery=data/synthetic/tfrecords --catalogue=runs/demo/catalogue.npz
  # 2. distance threshold for "possibly a new individual", on held-out data
  python -m lmid_tf.identify calibrate --model=... --catalogue=... \
      --held_out=data/synthetic/tfrecords
  # 3. new photos
  python -m lmid_tf.identify query --model=... --catalogue=... \
      --images=new1.png,new2.png --landmarks=new.csv --sheet=matches.png

`index` is skipped when the catalogue already matches the model and gallery
(their content fingerprint is stored in it). Identities are ranked by their
nearest catalogue image. Calibration: held-out queries whose individual is
in the catalogue give the nearest distances of *known* animals; the same
queries with their own individual removed from the catalogue stand in for
*new* animals. The threshold keeps the known-flagged-as-new rate at
--target_fpr and reports the share of new animals it catches.
"""

import dataclasses
import hashlib
import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from lmid_tf import evaluate
from lmid_tf import overlay
from lmid_tf import pipeline
from lmid_tf import preprocess


@dataclasses.dataclass
class Catalogue:
  embeddings: np.ndarray        # [G, D]
  names: np.ndarray             # [G] identity names (str)
  paths: np.ndarray             # [G] source image paths
  thumbnails: np.ndarray        # [G, 64, 64, 3] uint8 BGR
  fingerprint: str
  threshold: float = float('nan')   # nan until calibrated


def _hash_paths(paths, digest):
  for path in sorted(paths):
    digest.update(os.path.abspath(path).encode())
    with open(path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)


def fingerprint(model_path: str, gallery_files: list) -> str:
  """Content hash of the model's files and the gallery's files."""
  digest = hashlib.sha256()
  if os.path.isdir(model_path):
    model_files = [os.path.join(root, f) for root, _, files in
                   os.walk(model_path) for f in files]
  else:
    model_files = [model_path]
  _hash_paths(model_files, digest)
  digest.update(b'|gallery|')
  _hash_paths(gallery_files, digest)
  return digest.hexdigest()


def save_catalogue(path: str, catalogue: Catalogue) -> None:
  tmp = path + '.tmp.npz'
  np.savez_compressed(tmp, **dataclasses.asdict(catalogue))
  os.replace(tmp, path)


def load_catalogue(path: str) -> Catalogue:
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no catalogue; build one with '
                            '`python -m lmid_tf.identify index`')
  with np.load(path, allow_pickle=False) as data:
    return Catalogue(
        embeddings=data['embeddings'], names=data['names'],
        paths=data['paths'], thumbnails=data['thumbnails'],
        fingerprint=str(data['fingerprint']),
        threshold=float(data['threshold']))


def _thumbnail(image_u8: np.ndarray, size: int = 64) -> np.ndarray:
  tile = overlay.colourise(image_u8.astype(np.float32) / 255.0)
  return tf.image.resize(tile, [size, size]).numpy().astype(np.uint8)


def embed_photos(embed_fn, pre: preprocess.PreprocessConfig, photos: list,
                 landmarks_px=None, visible=None, batch_size: int = 32):
  """Encoded photos (+ pixel landmarks) -> (embeddings [N, D], images).

  The same preprocessing as the serving signature.
  """
  embeddings, images = [], []
  for start in range(0, len(photos), batch_size):
    stop = start + batch_size
    encoded = tf.constant(photos[start:stop])
    lms = vis = None
    if pre.num_landmarks:
      lms = tf.constant(landmarks_px[start:stop], tf.float32)
      vis = tf.constant(visible[start:stop], tf.float32)
    inputs = preprocess.encoded_inputs(encoded, lms, vis, pre)
    embeddings.append(embed_fn(inputs))
    images.append(np.round(preprocess.denormalise(
        inputs['image'], pre.channels).numpy() * 255).astype(np.uint8))
  return np.concatenate(embeddings), np.concatenate(images)


def read_photo_annotations(csv_path: str, images_root: str,
                           num_landmarks: int):
  """Photos + pixel landmarks from an annotation CSV (converter format).

  Returns (encoded list, landmarks [N, K, 2], visible [N, K], names, paths).
  Raises ValueError naming the file and line of the first bad row.
  """
  from data_tools import annotations
  _, rows, rejects = annotations.read(csv_path)
  if rejects:
    raise ValueError(f'{rejects[0].where}: {rejects[0].reason}')
  root = images_root or os.path.dirname(os.path.abspath(csv_path))
  photos, names, paths = [], [], []
  points = np.zeros((len(rows), max(num_landmarks, 0), 2), np.float32)
  visible = np.zeros((len(rows), max(num_landmarks, 0)), np.float32)
  for i, row in enumerate(rows):
    if num_landmarks and len(row.points) != num_landmarks:
      raise ValueError(f'{row.where}: {len(row.points)} landmarks, the model '
                       f'takes {num_landmarks}')
    path = os.path.join(root, row.path)
    if not os.path.isfile(path):
      raise ValueError(f'{row.where}: missing file {path}')
    with open(path, 'rb') as f:
      photos.append(f.read())
    for k, point in enumerate(row.points[:num_landmarks]):
      if point is not None:
        points[i, k], visible[i, k] = point, 1.0
    names.append(row.identity)
    paths.append(row.path)
  return photos, points, visible, names, paths


def gallery_files(gallery: str, split: str = 'gallery',
                  images_root: str = '') -> list:
  """The files a catalogue is built from, for its fingerprint."""
  if os.path.isdir(gallery):
    from lmid_tf import records
    return records.read_metadata(gallery).shard_paths(gallery, split)
  from data_tools import annotations
  root = images_root or os.path.dirname(os.path.abspath(gallery))
  return [gallery] + [os.path.join(root, row.path)
                      for row in annotations.read(gallery)[1]]


def build_catalogue(model_path: str, gallery: str, split: str = 'gallery',
                    images_root: str = '', batch_size: int = 64) -> Catalogue:
  """Embeds a gallery: a TFRecord dataset folder, or an annotation CSV."""
  embed_fn, pre = evaluate.load_embedder(model_path)
  if os.path.isdir(gallery):
    embedded = evaluate.embed_split(embed_fn, pipeline.eval_dataset(
        gallery, split, pre, batch_size))
    embeddings, images = embedded['embeddings'], embedded['images']
    names = np.array([n.decode() for n in embedded['names']])
    paths = np.array([p.decode() for p in embedded['paths']])
  else:
    photos, points, visible, names, paths = read_photo_annotations(
        gallery, images_root, pre.num_landmarks)
    embeddings, images = embed_photos(embed_fn, pre, photos, points, visible,
                                      batch_size)
    names, paths = np.array(names), np.array(paths)
  return Catalogue(
      embeddings=embeddings.astype(np.float32), names=names, paths=paths,
      thumbnails=np.stack([_thumbnail(im) for im in images]),
      fingerprint=fingerprint(model_path,
                              gallery_files(gallery, split, images_root)))


def rank_identities(embedding: np.ndarray, catalogue: Catalogue,
                    top_k: int = 5) -> list:
  """[(identity, distance)] best first, one entry per identity."""
  distances = np.linalg.norm(catalogue.embeddings - embedding[None], axis=1)
  best = {}
  for g in np.argsort(distances, kind='stable'):
    name = str(catalogue.names[g])
    if name not in best:
      best[name] = (float(distances[g]), int(g))
      if len(best) == top_k:
        break
  return [(name, d, g) for name, (d, g) in best.items()]


def calibrate_threshold(known_nearest: np.ndarray, new_nearest: np.ndarray,
                        target_fpr: float = 0.05) -> dict:
  """Threshold on nearest distance above which a query is "new".

  Args:
    known_nearest: nearest distances of queries whose individual is known.
    new_nearest: nearest distances of queries whose individual is not in the
      catalogue.
    target_fpr: accepted share of known individuals flagged as new.

  Returns:
    {'threshold', 'false_positive_rate' (known flagged new),
     'true_positive_rate' (new flagged new), 'known', 'new'}
  """
  known = np.sort(np.asarray(known_nearest, np.float64))
  new = np.asarray(new_nearest, np.float64)
  if not len(known) or not len(new):
    raise ValueError('calibration needs known and new queries')
  # The smallest threshold that flags at most target_fpr of known queries.
  allowed = int(np.floor(target_fpr * len(known)))
  threshold = float(known[len(known) - 1 - allowed])
  return {'threshold': threshold,
          'false_positive_rate': float(np.mean(known > threshold)),
          'true_positive_rate': float(np.mean(new > threshold)),
          'target_fpr': target_fpr, 'known': int(len(known)),
          'new': int(len(new))}


def calibrate(model_path: str, catalogue: Catalogue, held_out: str,
              split: str = 'query', target_fpr: float = 0.05,
              batch_size: int = 64) -> dict:
  embed_fn, pre = evaluate.load_embedder(model_path)
  embedded = evaluate.embed_split(embed_fn, pipeline.eval_dataset(
      held_out, split, pre, batch_size))
  names = np.array([n.decode() for n in embedded['names']])
  distances = evaluate.distance_matrix(embedded['embeddings'],
                                       catalogue.embeddings)
  same = names[:, None] == catalogue.names[None, :].astype(str)
  known_rows = same.any(axis=1)
  if not known_rows.any():
    raise ValueError(f'{held_out} ({split}): no query identity is in the '
                     'catalogue, nothing to calibrate the known side on')
  known = distances[known_rows].min(axis=1)
  new = np.where(same, np.inf, distances).min(axis=1)
  return calibrate_threshold(known, new, target_fpr)


def format_matches(path: str, matches: list, threshold: float) -> str:
  lines = [f'{path}:']
  nearest = matches[0][1] if matches else float('inf')
  if np.isfinite(threshold) and nearest > threshold:
    lines.append(f'  possibly a new individual (nearest {nearest:.3f} > '
                 f'threshold {threshold:.3f})')
  for rank, (name, distance, _) in enumerate(matches, 1):
    lines.append(f'  {rank}. {name}  distance {distance:.3f}')
  return '\n'.join(lines)


def query_sheet(images: np.ndarray, results: list,
                catalogue: Catalogue) -> np.ndarray:
  """Rows: each query photo, then its candidates' catalogue thumbnails."""
  tiles, columns = [], 1 + max(len(r) for r in results)
  for image, matches in zip(images, results):
    row = [_thumbnail(image)]
    row += [catalogue.thumbnails[g] for _, _, g in matches]
    row += [np.full_like(row[0], 255)] * (columns - len(row))
    tiles += row
  return overlay.grid(tiles, columns)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, '.keras embedding model or SavedModel.')
  flags.DEFINE_string('catalogue', None, 'Catalogue file (.npz).')
  flags.DEFINE_string('gallery', '', 'index: dataset folder (TFRecords) or '
                      'annotation CSV of catalogue photos.')
  flags.DEFINE_string('split', 'gallery', 'index: split of a dataset folder.')
  flags.DEFINE_string('images_root', '', 'Folder CSV image paths are '
                      'relative to; default: the CSV\'s folder.')
  flags.DEFINE_bool('force', False, 'index: rebuild even if up to date.')
  flags.DEFINE_string('held_out', '', 'calibrate: dataset folder whose '
                      '--held_out_split has known individuals.')
  flags.DEFINE_string('held_out_split', 'query', 'calibrate: split to use.')
  flags.DEFINE_float('target_fpr', 0.05, 'calibrate: share of known '
                     'individuals allowed to be flagged new.')
  flags.DEFINE_list('images', [], 'query: photos.')
  flags.DEFINE_string('landmarks', '', 'query: annotation CSV with the '
                      'photos\' landmarks (identity column may be empty).')
  flags.DEFINE_integer('top_k', 5, 'query: identities to list.')
  flags.DEFINE_string('sheet', '', 'query: PNG of queries and candidates.')
  flags.DEFINE_integer('batch_size', 64, 'Embedding batch size.')


def _index():
  if not FLAGS.gallery:
    raise ValueError('index needs --gallery')
  if os.path.exists(FLAGS.catalogue) and not FLAGS.force:
    old = load_catalogue(FLAGS.catalogue)
    files = gallery_files(FLAGS.gallery, FLAGS.split, FLAGS.images_root)
    if fingerprint(FLAGS.model, files) == old.fingerprint:
      print(f'identify: {FLAGS.catalogue} is up to date '
            f'({len(old.names)} images)')
      return
  catalogue = build_catalogue(FLAGS.model, FLAGS.gallery, FLAGS.split,
                              FLAGS.images_root, FLAGS.batch_size)
  save_catalogue(FLAGS.catalogue, catalogue)
  print(f'identify: wrote {FLAGS.catalogue} ({len(catalogue.names)} images, '
        f'{len(set(catalogue.names.tolist()))} identities)')


def _calibrate():
  if not FLAGS.held_out:
    raise ValueError('calibrate needs --held_out')
  catalogue = load_catalogue(FLAGS.catalogue)
  result = calibrate(FLAGS.model, catalogue, FLAGS.held_out,
                     FLAGS.held_out_split, FLAGS.target_fpr, FLAGS.batch_size)
  catalogue.threshold = result['threshold']
  save_catalogue(FLAGS.catalogue, catalogue)
  with open(FLAGS.catalogue + '.calibration.json', 'w') as f:
    json.dump(result, f, indent=2)
  print(f'identify: threshold {result["threshold"]:.4f}: known individuals '
        f'flagged new {100 * result["false_positive_rate"]:.1f}% '
        f'(n={result["known"]}), new individuals caught '
        f'{100 * result["true_positive_rate"]:.1f}% (n={result["new"]})')


def _query():
  if not FLAGS.images:
    raise ValueError('query needs --images')
  catalogue = load_catalogue(FLAGS.catalogue)
  embed_fn, pre = evaluate.load_embedder(FLAGS.model)
  photos = []
  for path in FLAGS.images:
    with open(path, 'rb') as f:
      photos.append(f.read())
  points = visible = None
  if pre.num_landmarks:
    if not FLAGS.landmarks:
      raise ValueError('this model takes landmarks: pass --landmarks=CSV')
    from serving import client
    points, visible = client.landmarks_from_csv(FLAGS.landmarks, FLAGS.images,
                                                pre.num_landmarks)
  embeddings, images = embed_photos(embed_fn, pre, photos, points, visible)
  results = [rank_identities(e, catalogue, FLAGS.top_k) for e in embeddings]
  for path, matches in zip(FLAGS.images, results):
    print(format_matches(path, matches, catalogue.threshold))
  if FLAGS.sheet:
    overlay.write_png(FLAGS.sheet, query_sheet(images, results, catalogue))
    print(f'identify: wrote {FLAGS.sheet}')


def main(argv):
  commands = {'index': _index, 'calibrate': _calibrate, 'query': _query}
  if len(argv) != 2 or argv[1] not in commands:
    raise app.UsageError('usage: python -m lmid_tf.identify '
                         '{index,calibrate,query} --model=... --catalogue=...')
  if not FLAGS.model or not FLAGS.catalogue:
    raise app.UsageError('--model and --catalogue are required')
  try:
    commands[argv[1]]()
  except (FileNotFoundError, ValueError, OSError,
          tf.errors.InvalidArgumentError) as e:
    sys.exit(f'identify {argv[1]}: error: {getattr(e, "message", e)}')


if __name__ == '__main__':
  define_flags()
  app.run(main)

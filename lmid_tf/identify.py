r"""Identify individuals against a catalogue of known ones, open set.

  # 1. catalogue from a gallery (TFRecords, or photos + annotation CSV)
  python -m lmid_tf.identify index --model=runs/demo/embedding_model.keras \
      --gallery=data/synthetic/tfrecords --catalogue=runs/demo/catalogue.sqlite
  # 2. distance threshold for "possibly a new individual", on held-out data
  python -m lmid_tf.identify calibrate --model=... --catalogue=... \
      --held_out=data/synthetic/tfrecords
  # 3. new photos: a verdict each, ranked candidates, a review sheet
  python -m lmid_tf.identify query --model=... --catalogue=... \
      --images=new1.jpg,new2.jpg --landmarks=new.csv --sheet=review.png

  # photos and sightings in (an old .npz, a dataset folder, or a CSV with
  # date, location, lat, lon, viewpoint columns); the season's results out
  python -m lmid_tf.identify import --catalogue=... --source=photos.csv
  python -m lmid_tf.identify export --catalogue=... --out=runs/season \
      --occasion=month

The catalogue is a database (lmid_tf.identification.database; .npz files
still work for index, calibrate and query). `index` is skipped when the catalogue already matches the model and gallery
(their content fingerprint is stored in it). Identities are ranked by their
nearest catalogue image. Calibration: held-out queries whose individual is
in the catalogue give the nearest distances of *known* animals; the same
queries with their own individual removed from the catalogue stand in for
*new* animals. The threshold keeps the known-flagged-as-new rate at
--target_fpr and reports the share of new animals it catches.

The query CSV needs only a path column and the landmark columns; photos are
matched to its rows by resolved path.
"""

import json
import os
import sys

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow as tf

from lmid_tf.data import annotations
from lmid_tf import artifacts
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf import cli
from lmid_tf import evaluate
from lmid_tf.identification import bridge
from lmid_tf.identification import database
from lmid_tf.identification import export
from lmid_tf.identification import importer
from lmid_tf.modeling import landmark_model
from lmid_tf.data import overlay
from lmid_tf.data import pipeline
from lmid_tf.data import preprocess
from lmid_tf.data import records

THUMBNAIL = 64


def _thumbnail(image_u8: np.ndarray) -> np.ndarray:
  tile = overlay.colourise(image_u8.astype(np.float32) / 255.0)
  return tf.image.resize(tile, [THUMBNAIL, THUMBNAIL]).numpy().astype(np.uint8)


def embed_photos(embed_fn, pre: preprocess.PreprocessConfig, photos: list,
                 landmarks_px=None, visible=None, batch_size: int = 32,
                 predictor=None) -> dict:
  """Encoded photos (+ pixel landmarks) -> embeddings and what was seen.

  The same preprocessing as the serving signature. Without landmarks, a
  `predictor` ((keras model, its PreprocessConfig), landmark_model.load)
  finds them, as the images_only signature does.

  Returns:
    {'embeddings' [N, D], 'images' [N, S, S, C] uint8 as the model saw them,
     'landmarks' [N, K, 2] normalised, 'visible' [N, K], 'confidence' [N, K]
     (1 for given landmarks)}
  """
  parts = {k: [] for k in ('embeddings', 'images', 'landmarks', 'visible',
                           'confidence')}
  for start in range(0, len(photos), batch_size):
    stop = start + batch_size
    encoded = tf.constant(photos[start:stop])
    decoded, sizes = preprocess.decode_batch(encoded, pre)
    count = len(photos[start:stop])
    landmarks = tf.zeros([count, pre.num_landmarks, 2])
    vis = confidence = tf.zeros([count, pre.num_landmarks])
    if pre.num_landmarks and landmarks_px is not None:
      landmarks = preprocess.normalise_landmarks(
          landmarks_px[start:stop], sizes)
      vis = confidence = tf.constant(visible[start:stop], tf.float32)
    elif pre.num_landmarks:
      net, predictor_pre = predictor
      found = landmark_model.predict_encoded(net, predictor_pre, encoded)
      confidence = found['visibility']
      landmarks, vis = landmark_model.found_landmarks(found)
    parts['embeddings'].append(embed_fn(preprocess.model_inputs(
        decoded, landmarks, vis, pre)))
    parts['images'].append(np.round(decoded.numpy() * 255).astype(np.uint8))
    parts['landmarks'].append(np.asarray(landmarks))
    parts['visible'].append(np.asarray(vis))
    parts['confidence'].append(np.asarray(confidence))
  return {k: np.concatenate(v) for k, v in parts.items()}


def load_predictor(path: str, pre: preprocess.PreprocessConfig):
  """(model, PreprocessConfig) of a landmark predictor that fits `pre`."""
  predictor = landmark_model.load(path)
  landmark_model.check_combination(pre, predictor[1])
  return predictor


def read_photos(paths: list) -> list:
  photos = []
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such photo')
    with open(path, 'rb') as f:
      photos.append(f.read())
  return photos


def _row_files(rows: list, root: str) -> list:
  """The file of each annotation row; ValueError naming the row whose path
  leads outside `root`."""
  files = []
  for row in rows:
    try:
      files.append(annotations.resolve_path(root, row.path))
    except ValueError as e:
      raise ValueError(f'{row.where}: {e}') from None
  return files


def read_photo_annotations(csv_path: str, images_root: str,
                           num_landmarks: int, identity_field: str = 'identity',
                           path_field: str = ''):
  """Photos + pixel landmarks from an annotation CSV (converter format).

  Returns (encoded list, landmarks [N, K, 2], visible [N, K], names, paths).
  Raises ValueError naming the file and line of the first bad row.
  """
  _, rows, rejects = annotations.read(csv_path, identity_field,
                                      path_field=path_field)
  if rejects:
    raise ValueError(f'{rejects[0].where}: {rejects[0].reason}')
  files = _row_files(rows, images_root or os.path.dirname(
      os.path.abspath(csv_path)))
  for row, path in zip(rows, files):
    if not os.path.isfile(path):
      raise ValueError(f'{row.where}: missing file {path}')
  points, visible = annotations.landmark_arrays(rows, num_landmarks) if (
      num_landmarks) else (None, None)
  return (read_photos(files), points, visible, [r.identity for r in rows],
          [r.path for r in rows])


def gallery_files(gallery: str, split: str = 'gallery',
                  images_root: str = '', identity_field: str = 'identity',
                  path_field: str = '') -> list:
  """The files a catalogue is built from, for its fingerprint."""
  if os.path.isdir(gallery):
    return records.read_metadata(gallery).shard_paths(gallery, split)
  rows = annotations.read(gallery, identity_field, path_field=path_field)[1]
  files = _row_files(rows, images_root or os.path.dirname(
      os.path.abspath(gallery)))
  return [gallery] + [f for f in files if os.path.isfile(f)]


def build_catalogue(model_path: str, gallery: str, split: str = 'gallery',
                    images_root: str = '', batch_size: int = 64,
                    identity_field: str = 'identity',
                    path_field: str = '') -> catalogue_lib.Catalogue:
  """Embeds a gallery: a TFRecord dataset folder, or an annotation CSV."""
  embed_fn, pre = artifacts.load_embedder(model_path)
  if os.path.isdir(gallery):
    embedded = evaluate.embed_split(embed_fn, pipeline.eval_dataset(
        gallery, split, pre, batch_size))
    embeddings, images = embedded['embeddings'], embedded['images']
    landmarks, visible = embedded['landmarks'], embedded['visible']
    names = np.array([n.decode() for n in embedded['names']])
    paths = np.array([p.decode() for p in embedded['paths']])
  else:
    photos, points, vis, names, paths = read_photo_annotations(
        gallery, images_root, pre.num_landmarks, identity_field, path_field)
    if not photos:
      raise ValueError(f'{gallery}: no photos')
    embedded = embed_photos(embed_fn, pre, photos, points, vis, batch_size)
    embeddings, images = embedded['embeddings'], embedded['images']
    landmarks, visible = embedded['landmarks'], embedded['visible']
    names, paths = np.array(names), np.array(paths)
  return catalogue_lib.Catalogue(
      embeddings=embeddings.astype(np.float32), names=names, paths=paths,
      thumbnails=np.stack([_thumbnail(im) for im in images]),
      landmarks=np.asarray(landmarks, np.float32),
      visible=np.asarray(visible, np.float32),
      fingerprint=catalogue_lib.fingerprint(model_path, gallery_files(
          gallery, split, images_root, identity_field, path_field)),
      model=catalogue_lib.model_fingerprint(model_path))


def calibrate(model_path: str, catalogue: catalogue_lib.Catalogue,
              held_out: str, split: str = 'query', target_fpr: float = 0.05,
              batch_size: int = 64) -> dict:
  embed_fn, pre = artifacts.load_embedder(model_path)
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
  return catalogue_lib.calibrate_threshold(known, new, target_fpr)


# ---- the review sheet -------------------------------------------------------

_VERDICT_COLOURS = {'known': (40, 150, 40), 'new': (0, 120, 230),
                    'uncalibrated': (110, 110, 110), 'empty': (110, 110, 110),
                    'not_found': (40, 40, 200)}
_TILE = 2 * THUMBNAIL


def _captioned(tile: np.ndarray, landmarks, visible, lines: list,
               frame=None) -> np.ndarray:
  tile = cv2.resize(tile, (_TILE, _TILE), interpolation=cv2.INTER_NEAREST)
  if landmarks is not None and len(landmarks):
    tile = overlay.draw_landmarks(tile, landmarks, visible, radius=4)
  if frame is not None:
    cv2.rectangle(tile, (0, 0), (_TILE - 1, _TILE - 1), frame, 3)
  caption = np.full((16 * len(lines) + 4, _TILE, 3), 255, np.uint8)
  for i, line in enumerate(lines):
    cv2.putText(caption, line[:22], (3, 14 + 16 * i),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
  return np.concatenate([tile, caption], axis=0)


def review_sheet(images, landmarks, visible, records_: list,
                 catalogue: catalogue_lib.Catalogue) -> np.ndarray:
  """One row per query photo, for a person to decide from.

  A verdict band ("known: id00060" / "new individual? nearest 0.91 >
  threshold 0.79"), then the query with its landmarks, then its top-k
  catalogue photos, each with identity, distance and landmarks; the nearest
  is framed in the verdict's colour.
  """
  columns = 1 + max(1, max(len(r['matches']) for r in records_))
  rows = []
  for image, points, vis, record in zip(images, landmarks, visible, records_):
    colour = _VERDICT_COLOURS[record['verdict']]
    tiles = [_captioned(_thumbnail(image), points, vis,
                        ['query', os.path.basename(record['photo'])],
                        frame=(0, 0, 0))]
    for match in record['matches']:
      g = int(np.flatnonzero(catalogue.paths == match['catalogue_photo'])[0])
      tiles.append(_captioned(
          catalogue.thumbnails[g], catalogue.landmarks[g],
          catalogue.visible[g],
          [f'{match["rank"]}. {match["identity"]}',
           f'distance {match["distance"]:.3f}'],
          frame=colour if match['rank'] == 1 else None))
    while len(tiles) < columns:
      tiles.append(np.full_like(tiles[0], 255))
    body = overlay.grid(tiles, columns)
    band = np.full((26, body.shape[1], 3), colour, np.uint8)
    cv2.putText(band, record['text'][:110], (6, 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    rows.append(np.concatenate([band, body], axis=0))
  return np.concatenate(rows, axis=0)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, '.keras embedding model or SavedModel.')
  flags.DEFINE_string('catalogue', None, 'Catalogue database (.sqlite; '
                      'created if missing) or an older .npz catalogue file.')
  flags.DEFINE_string('gallery', '', 'index: dataset folder (TFRecords) or '
                      'annotation CSV of catalogue photos.')
  flags.DEFINE_string('split', 'gallery', 'index: split of a dataset folder.')
  flags.DEFINE_string('images_root', '', 'Folder CSV image paths are '
                      'relative to; default: the CSV\'s folder.')
  flags.DEFINE_string('identity_field', 'identity', 'index: CSV column with '
                      'the identity.')
  flags.DEFINE_string('path_field', '', 'CSV column with the image path '
                      '(default: path).')
  flags.DEFINE_bool('force', False, 'index: rebuild even if up to date.')
  flags.DEFINE_bool('add', False, 'index: add the --gallery photos to the '
                    'existing catalogue (photos already in it are skipped) '
                    'instead of rebuilding it from --gallery alone.')
  flags.DEFINE_string('held_out', '', 'calibrate: dataset folder whose '
                      '--held_out_split has known individuals.')
  flags.DEFINE_string('held_out_split', 'query', 'calibrate: split to use.')
  flags.DEFINE_float('target_fpr', 0.05, 'calibrate: share of known '
                     'individuals allowed to be flagged new.')
  flags.DEFINE_list('images', [], 'query: photos.')
  flags.DEFINE_string('landmarks', '', 'query: CSV with a path column and '
                      'the photos\' <landmark>_x/_y columns (no identity '
                      'needed).')
  flags.DEFINE_string('landmark_model', '', 'query: a landmark_model.keras '
                      '(lmid_tf.train_landmarks) that finds the landmarks of '
                      'photos given without --landmarks.')
  flags.DEFINE_integer('top_k', 5, 'query: identities to list.')
  flags.DEFINE_string('sheet', '', 'query: review sheet PNG (one row per '
                      'photo: verdict, query, candidates).')
  flags.DEFINE_bool('json', False, 'query: print one JSON object per photo '
                    '(verdict and matches) instead of text.')
  flags.DEFINE_integer('batch_size', 64, 'Embedding batch size.')
  flags.DEFINE_string('source', '', 'import: an .npz catalogue, a dataset '
                      'folder (TFRecords) or a CSV of photos (path, optional '
                      'identity, date, location, lat, lon, viewpoint, '
                      'landmark and further columns).')
  flags.DEFINE_bool('new_individuals', False, 'import: create the '
                    'individuals a CSV names that the catalogue lacks (else '
                    'such rows are refused as unknown individuals).')
  flags.DEFINE_string('out', '', 'export: folder for sightings.csv and '
                      'capture_history.csv/.inp.')
  flags.DEFINE_string('occasion', 'day', 'export: capture occasions: day, '
                      'week, month, or a sightings column.')


def _index():
  if not FLAGS.gallery:
    raise ValueError('index needs --gallery')
  fields = dict(identity_field=FLAGS.identity_field,
                path_field=FLAGS.path_field)
  if _is_database():
    _index_database(fields)
    return
  if FLAGS.add:
    _add(fields)
    return
  if os.path.exists(FLAGS.catalogue) and not FLAGS.force:
    try:
      old = catalogue_lib.load(FLAGS.catalogue)
    except ValueError:
      old = None   # an older format: rebuilt below
    files = gallery_files(FLAGS.gallery, FLAGS.split, FLAGS.images_root,
                          **fields)
    if old and catalogue_lib.fingerprint(FLAGS.model, files) == (
        old.fingerprint):
      print(f'identify: {FLAGS.catalogue} is up to date '
            f'({len(old.names)} images)')
      return
  catalogue = build_catalogue(FLAGS.model, FLAGS.gallery, FLAGS.split,
                              FLAGS.images_root, FLAGS.batch_size, **fields)
  catalogue_lib.save(FLAGS.catalogue, catalogue)
  print(f'identify: wrote {FLAGS.catalogue} ({len(catalogue.names)} images, '
        f'{len(set(catalogue.names.tolist()))} identities)')


def _is_database() -> bool:
  return not FLAGS.catalogue.endswith('.npz')


def _index_database(fields):
  """Adds the gallery to the database: photos already in it (same
  content) only get this model's embedding."""
  model = catalogue_lib.model_fingerprint(FLAGS.model)
  stamp = catalogue_lib.fingerprint(FLAGS.model, gallery_files(
      FLAGS.gallery, FLAGS.split, FLAGS.images_root, **fields))
  with database.open(FLAGS.catalogue) as cat:
    key = f'gallery_fingerprint:{model}'
    if not FLAGS.force and database.setting(cat, key) == stamp:
      print(f'identify: {FLAGS.catalogue} is up to date')
      return
    if os.path.isdir(FLAGS.gallery):   # the photos' bytes go in first
      importer.import_dataset(cat, FLAGS.gallery, [FLAGS.split])
    built = build_catalogue(FLAGS.model, FLAGS.gallery, FLAGS.split,
                            FLAGS.images_root, FLAGS.batch_size, **fields)
    root = FLAGS.images_root or ('' if os.path.isdir(FLAGS.gallery) else
                                 os.path.dirname(os.path.abspath(
                                     FLAGS.gallery)))
    counts = bridge.import_catalogue(cat, built, root, model)
    database.set_setting(cat, key, stamp)
    print(f'identify: wrote {FLAGS.catalogue} ({len(built.names)} images, '
          f'{len(set(built.names.tolist()))} identities; {counts["added"]} '
          f'new photos, {counts["existing"]} already in it)')


def _load_catalogue(num_landmarks: int = 0) -> catalogue_lib.Catalogue:
  if not _is_database():
    return catalogue_lib.load(FLAGS.catalogue)
  if not os.path.exists(FLAGS.catalogue):
    raise FileNotFoundError(f'{FLAGS.catalogue}: no catalogue; build one '
                            'with `python -m lmid_tf.identify index`')
  cat = database.open(FLAGS.catalogue)   # stays open for lazy thumbnails
  return bridge.to_catalogue(cat, catalogue_lib.model_fingerprint(
      FLAGS.model), num_landmarks, THUMBNAIL)


def _import():
  if not FLAGS.source:
    raise ValueError('import needs --source (.npz, dataset folder or CSV)')
  with database.open(FLAGS.catalogue) as cat:
    counts = importer.import_source(
        cat, FLAGS.source, FLAGS.images_root, FLAGS.identity_field,
        FLAGS.path_field or 'path', FLAGS.new_individuals)
  for where, reason in counts['rejects']:
    print(f'{where}: {reason}', file=sys.stderr)
  print(f'identify: imported {FLAGS.source} into {FLAGS.catalogue}: '
        f'{counts["added"]} new photos, {counts["existing"]} already in it, '
        f'{len(counts["rejects"])} refused')


def _export():
  if not FLAGS.out:
    raise ValueError('export needs --out=DIR')
  if not os.path.exists(FLAGS.catalogue):
    raise FileNotFoundError(f'{FLAGS.catalogue}: no catalogue')
  with database.open(FLAGS.catalogue) as cat:
    result = export.export(cat, FLAGS.out, FLAGS.occasion)
  skipped = (f'; {result["skipped"]} identified sightings without a '
             f'{FLAGS.occasion} left out of the capture history'
             if result['skipped'] else '')
  print(f'identify: wrote {", ".join(result["paths"].values())} '
        f'({result["sightings"]} sightings, {result["individuals"]} '
        f'individuals x {result["occasions"]} occasions{skipped})')


def _add(fields):
  old = catalogue_lib.load(FLAGS.catalogue)
  model = catalogue_lib.model_fingerprint(FLAGS.model)
  if old.model and old.model != model:
    raise ValueError(f'{FLAGS.catalogue} was built with another model than '
                     f'{FLAGS.model}: its embeddings would not compare; '
                     'rebuild it with index --force')
  new = build_catalogue(FLAGS.model, FLAGS.gallery, FLAGS.split,
                        FLAGS.images_root, FLAGS.batch_size, **fields)
  merged, skipped = catalogue_lib.merge(old, new)
  catalogue_lib.save(FLAGS.catalogue, merged)
  print(f'identify: added {len(new.names) - skipped} images to '
        f'{FLAGS.catalogue} ({skipped} already in it): '
        f'{len(merged.names)} images, '
        f'{len(set(merged.names.tolist()))} identities')


def _calibrate():
  if not FLAGS.held_out:
    raise ValueError('calibrate needs --held_out')
  catalogue = _load_catalogue()
  result = calibrate(FLAGS.model, catalogue, FLAGS.held_out,
                     FLAGS.held_out_split, FLAGS.target_fpr, FLAGS.batch_size)
  if _is_database():
    with database.open(FLAGS.catalogue) as cat:
      database.set_threshold(cat, catalogue.model, result['threshold'])
  else:
    catalogue.threshold = result['threshold']
    catalogue_lib.save(FLAGS.catalogue, catalogue)
  artifacts.write_json(FLAGS.catalogue + '.calibration.json', result)
  print(f'identify: threshold {result["threshold"]:.4f}: known individuals '
        f'flagged new {100 * result["false_positive_rate"]:.1f}% '
        f'(n={result["known"]}), new individuals caught '
        f'{100 * result["true_positive_rate"]:.1f}% (n={result["new"]})')


def _query():
  if not FLAGS.images:
    raise ValueError('query needs --images')
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  catalogue = _load_catalogue(pre.num_landmarks)
  points = visible = predictor = None
  if pre.num_landmarks and FLAGS.landmarks:
    rows = annotations.rows_for_images(FLAGS.landmarks, FLAGS.images,
                                       FLAGS.images_root, FLAGS.path_field)
    points, visible = annotations.landmark_arrays(rows, pre.num_landmarks)
  elif pre.num_landmarks and FLAGS.landmark_model:
    predictor = load_predictor(FLAGS.landmark_model, pre)
  elif pre.num_landmarks:
    raise ValueError('this model takes landmarks: pass --landmarks=CSV (a '
                     'path column and <landmark>_x/_y columns), or '
                     '--landmark_model to find them')
  embedded = embed_photos(embed_fn, pre, read_photos(FLAGS.images), points,
                          visible, FLAGS.batch_size, predictor)
  records_ = []
  for i, path in enumerate(FLAGS.images):
    if predictor and not embedded['visible'][i].any():
      records_.append(catalogue_lib.not_found_record(
          path, embedded['confidence'][i], catalogue.threshold))
      continue
    records_.append(catalogue_lib.match_record(
        path, catalogue_lib.rank_identities(embedded['embeddings'][i],
                                            catalogue, FLAGS.top_k),
        catalogue))
  images, landmarks = embedded['images'], embedded['landmarks']
  shown = embedded['visible']
  for record in records_:
    print(json.dumps(record) if FLAGS.json else
          catalogue_lib.format_record(record))
  if FLAGS.sheet:
    overlay.write_png(FLAGS.sheet, review_sheet(images, landmarks, shown,
                                                records_, catalogue))
    if not FLAGS.json:
      print(f'identify: wrote {FLAGS.sheet}')


def main(argv):
  commands = {'index': _index, 'calibrate': _calibrate, 'query': _query,
              'import': _import, 'export': _export}
  if len(argv) != 2 or argv[1] not in commands:
    raise app.UsageError('usage: python -m lmid_tf.identify '
                         '{index,calibrate,query,import,export} '
                         '--catalogue=... [--model=...]')
  if not FLAGS.catalogue or (argv[1] not in ('import', 'export') and
                             not FLAGS.model):
    raise app.UsageError('--catalogue is required, and --model for '
                         'index, calibrate and query')
  commands[argv[1]]()


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'identify')

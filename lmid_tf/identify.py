r"""Identify individuals against a catalogue of known ones, open set.

  # 1. catalogue from a gallery (TFRecords, or photos + annotation CSV)
  python -m lmid_tf.identify index --model=runs/demo/embedding_model.keras \
      --gallery=data/synthetic/tfrecords --catalogue=runs/demo/catalogue.npz
  # 2. distance threshold for "possibly a new individual", on held-out data
  python -m lmid_tf.identify calibrate --model=... --catalogue=... \
      --held_out=data/synthetic/tfrecords
  # 3. new photos: a verdict each, ranked candidates, a review sheet
  python -m lmid_tf.identify query --model=... --catalogue=... \
      --images=new1.jpg,new2.jpg --landmarks=new.csv --sheet=review.png

`index` is skipped when the catalogue already matches the model and gallery
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

from absl import app
from absl import flags

from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf.data import annotations
from lmid_tf.data import overlay
from lmid_tf.evaluation import embedding as embedding_lib
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import indexing
from lmid_tf.identification import photos as photos_lib
from lmid_tf.identification import review_sheet
from lmid_tf.modeling import landmark_model

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, '.keras embedding model or SavedModel.')
  flags.DEFINE_string('catalogue', None, 'Catalogue file (.npz).')
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


def _index():
  if not FLAGS.gallery:
    raise ValueError('index needs --gallery')
  fields = dict(identity_field=FLAGS.identity_field,
                path_field=FLAGS.path_field)
  if FLAGS.add:
    _add(fields)
    return
  if os.path.exists(FLAGS.catalogue) and not FLAGS.force:
    old = catalogue_lib.load(FLAGS.catalogue)
    files = photos_lib.gallery_files(FLAGS.gallery, FLAGS.split, FLAGS.images_root,
                          **fields)
    if catalogue_lib.fingerprint(FLAGS.model, files) == (
        old.fingerprint):
      print(f'identify: {FLAGS.catalogue} is up to date '
            f'({len(old.names)} images)')
      return
  catalogue = indexing.build_catalogue(FLAGS.model, FLAGS.gallery, FLAGS.split,
                              FLAGS.images_root, FLAGS.batch_size, **fields)
  catalogue_lib.save(FLAGS.catalogue, catalogue)
  print(f'identify: wrote {FLAGS.catalogue} ({len(catalogue.names)} images, '
        f'{len(set(catalogue.names.tolist()))} identities)')


def _add(fields):
  old = catalogue_lib.load(FLAGS.catalogue)
  model = catalogue_lib.model_fingerprint(FLAGS.model)
  if old.model != model:
    raise ValueError(f'{FLAGS.catalogue} was built with another model than '
                     f'{FLAGS.model}: its embeddings would not compare; '
                     'rebuild it with index --force')
  new = indexing.build_catalogue(FLAGS.model, FLAGS.gallery, FLAGS.split,
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
  catalogue = catalogue_lib.load(FLAGS.catalogue)
  result = indexing.calibrate(FLAGS.model, catalogue, FLAGS.held_out,
                     FLAGS.held_out_split, FLAGS.target_fpr, FLAGS.batch_size)
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
  catalogue = catalogue_lib.load(FLAGS.catalogue)
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  points = visible = predictor = None
  if pre.num_landmarks and FLAGS.landmarks:
    rows = annotations.rows_for_images(FLAGS.landmarks, FLAGS.images,
                                       FLAGS.images_root, FLAGS.path_field)
    points, visible = annotations.landmark_arrays(rows, pre.num_landmarks)
  elif pre.num_landmarks and FLAGS.landmark_model:
    predictor = landmark_model.load(FLAGS.landmark_model, pre)
  elif pre.num_landmarks:
    raise ValueError('this model takes landmarks: pass --landmarks=CSV (a '
                     'path column and <landmark>_x/_y columns), or '
                     '--landmark_model to find them')
  embedded = embedding_lib.embed_photos(embed_fn, pre, photos_lib.read_photos(FLAGS.images), points,
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
    overlay.write_png(FLAGS.sheet, review_sheet.review_sheet(images, landmarks, shown,
                                                records_, catalogue))
    if not FLAGS.json:
      print(f'identify: wrote {FLAGS.sheet}')


def main(argv):
  commands = {'index': _index, 'calibrate': _calibrate, 'query': _query}
  if len(argv) != 2 or argv[1] not in commands:
    raise app.UsageError('usage: python -m lmid_tf.identify '
                         '{index,calibrate,query} --model=... --catalogue=...')
  if not FLAGS.model or not FLAGS.catalogue:
    raise app.UsageError('--model and --catalogue are required')
  commands[argv[1]]()


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'identify')

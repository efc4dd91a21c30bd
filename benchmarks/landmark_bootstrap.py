r"""How many clicked photos does a collection need? The landmark bootstrap,
measured on the visible-body set (issue 21).

  python -m data_tools.make_synthetic --out=data/body --variant=body
  python -m benchmarks.landmark_bootstrap --body=data/body --out=runs/bootstrap

For each --fractions f, as a user with a collection and no landmarks would:
1. click f of the train photos (seeded choice; the set's annotations stand
   in for the clicks) and train the landmark predictor on those
   (--predictor_flagfile; every fraction trains the same number of steps,
   so a small set is not also a short run). Its error is measured on the
   test identities' annotated landmarks.
2. convert the whole collection with that predictor
   (`data_tools.convert --landmark_model`): the clicked photos keep their
   landmarks, every other photo, the test identities' included, gets the
   predicted ones.
3. train re-ID on the result (--reid_flagfile) and evaluate it on those
   predicted landmarks, against the same recipe trained and evaluated on
   every photo's annotated landmarks.
Each step is a subprocess of the tool a user would run; its command is
printed. With --reuse, steps whose output exists are not run again.
"""

import csv
import json
import os
import subprocess
import sys
import time

from absl import flags
import numpy as np

from benchmarks import machine
from lmid_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('body', 'data/body', 'make_synthetic --variant=body '
                      'output (annotations.csv, images/, tfrecords/).')
  flags.DEFINE_string('out', 'runs/bootstrap', 'Folder for everything made.')
  flags.DEFINE_list('fractions', ['0.05', '0.1', '1'], 'Shares of the train '
                    'photos clicked.')
  flags.DEFINE_string('predictor_flagfile', 'configs/landmarks_cpu.flags',
                      'lmid_tf.train_landmarks recipe.')
  flags.DEFINE_string('reid_flagfile', 'configs/experiments/'
                      'landmark_predictor/body_r05_20ep.flags',
                      'lmid_tf.train recipe.')
  flags.DEFINE_integer('seed', 0, 'Seed of the clicked photos\' choice.')
  flags.DEFINE_bool('reuse', False, 'Skip steps whose output exists.')


def landmark_columns(header) -> list:
  return [c for c in header if c.endswith(('_x', '_y', '_visible'))]


def bootstrap_rows(rows: list, fraction: float, seed: int) -> tuple:
  """(the predictor's rows, the collection's rows, photos clicked) for
  `fraction` of the train photos clicked.

  Whole individuals are clicked (every train photo of a seeded choice of
  train identities, until `fraction` of the train photos is reached), as a
  user starts with the animals they know; the converter also keeps only
  identities with two or more photos. The predictor trains on the clicked
  rows and is scored on the test rows (annotated); in the collection only
  the clicked rows keep their landmarks."""
  train = [r for r in rows if r['split'] == 'train']
  identities = sorted({r['identity'] for r in train})
  order = np.random.default_rng(seed).permutation(len(identities))
  photos_of = {}
  for r in train:
    photos_of[r['identity']] = photos_of.get(r['identity'], 0) + 1
  chosen, clicked = set(), 0
  for i in order:
    if clicked >= fraction * len(train):
      break
    chosen.add(identities[i])
    clicked += photos_of[identities[i]]
  blank = {c: '' for c in landmark_columns(rows[0])}
  is_clicked = [r['split'] == 'train' and r['identity'] in chosen
                for r in rows]
  predictor = [r for r, c in zip(rows, is_clicked)
               if c or r['split'] != 'train']
  collection = [r if c else {**r, **blank} for r, c in zip(rows, is_clicked)]
  return predictor, collection, clicked


def _write_csv(path: str, rows: list):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _run(output: str, module: str, *args):
  """Runs `python -m module args` unless --reuse finds `output`."""
  command = [sys.executable, '-m', module, *args]
  print('$ python -m ' + ' '.join(command[2:]), flush=True)
  if FLAGS.reuse and os.path.exists(output):
    print('  (reused)', flush=True)
    return 0.0
  start = time.time()
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f'{module} failed:\n{done.stderr[-3000:]}')
  return time.time() - start


def _convert(csv_path: str, out: str, *extra):
  return _run(os.path.join(out, 'metadata.json'), 'data_tools.convert',
              f'--annotations={csv_path}', f'--images_root={FLAGS.body}',
              f'--out={out}', '--split_column=split', '--overwrite', *extra)


def _reid(data: str, run_dir: str) -> tuple:
  seconds = _run(os.path.join(run_dir, 'eval', 'results.json'),
                 'lmid_tf.train', f'--flagfile={FLAGS.reid_flagfile}',
                 f'--data={data}', f'--run_dir={run_dir}')
  with open(os.path.join(run_dir, 'eval', 'results.json')) as f:
    return json.load(f), seconds


def main(argv):
  del argv
  with open(os.path.join(FLAGS.body, 'annotations.csv')) as f:
    rows = list(csv.DictReader(f))
  records = os.path.join(FLAGS.body, 'tfrecords')
  with open(os.path.join(records, 'metadata.json')) as f:
    train_images = json.load(f)['splits']['train']['images']
  # The recipe's batch (P x K) over the whole train split: the same number
  # of predictor steps for every fraction.
  batch = 64
  steps = max(1, train_images // batch)
  table = []
  reference, seconds = _reid(records, os.path.join(FLAGS.out, 'annotated'))
  table.append(('every photo annotated', '', reference, seconds))
  for text in FLAGS.fractions:
    fraction = float(text)
    name = f'clicked_{fraction:g}'
    folder = os.path.join(FLAGS.out, name)
    predictor_rows, collection_rows, clicked = bootstrap_rows(
        rows, fraction, FLAGS.seed)
    _write_csv(os.path.join(folder, 'clicked.csv'), predictor_rows)
    _write_csv(os.path.join(folder, 'collection.csv'), collection_rows)
    seconds = _convert(os.path.join(folder, 'clicked.csv'),
                       os.path.join(folder, 'clicked'))
    lm_dir = os.path.join(folder, 'landmarks')
    seconds += _run(os.path.join(lm_dir, 'landmark_model.keras'),
                    'lmid_tf.train_landmarks',
                    f'--flagfile={FLAGS.predictor_flagfile}',
                    f'--data={os.path.join(folder, "clicked")}',
                    f'--run_dir={lm_dir}', f'--steps_per_epoch={steps}')
    with open(os.path.join(lm_dir, 'eval', 'landmarks.json')) as f:
      errors = json.load(f)['predictor']
    collection = os.path.join(folder, 'collection')
    seconds += _convert(os.path.join(folder, 'collection.csv'), collection,
                        f'--landmark_model='
                        f'{os.path.join(lm_dir, "landmark_model.keras")}')
    results, reid_seconds = _reid(collection, os.path.join(folder, 'reid'))
    table.append((f'{fraction:.0%} of train photos clicked ({clicked})',
                  errors, results, seconds + reid_seconds))

  print('\n| landmarks | predictor mean error % | median % | PCK@5 % | '
        're-ID top-1 % | top-5 % | mAP % | minutes |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for name, errors, results, seconds in table:
    error = (f'{errors["mean"]:.2f} | {errors["median"]:.2f} | '
             f'{100 * errors["pck5"]:.1f}' if errors else '– | – | –')
    print(f'| {name} | {error} | {100 * results["top1"]:.2f} | '
          f'{100 * results["top5"]:.2f} | {100 * results["mAP"]:.2f} | '
          f'{seconds / 60:.1f} |')
  print()
  machine.print_footer(f'python -m benchmarks.landmark_bootstrap '
                       f'--body={FLAGS.body} --out={FLAGS.out} '
                       f'--fractions={",".join(FLAGS.fractions)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'landmark_bootstrap')

r"""The main job, end to end on a small synthetic set, through the real CLIs.

  python -m tools.demo --out=runs/demo

generate + convert -> train (configs/demo.flags) and a landmark predictor ->
export a SavedModel -> evaluate the export -> serve it (serving.dev_server)
and query it with serving.client, with and without landmarks -> build,
calibrate and query an identification catalogue (review sheet) -> the
catalogue database (catalogue.sqlite) with a dozen new photos waiting for
review, and the one command that opens the review desk on it.
Everything is written under --out; each step's command is printed so it can
be rerun by hand. Takes a few minutes on 2 CPU cores.
"""

import csv

import os
import shutil
import socket
import subprocess
import sys
import time

from absl import flags

from lmid_tf import artifacts
from lmid_tf import cli

MARKER = '.lmid_demo'
FLAGS = flags.FLAGS


def _run(*args, capture=False):
  command = [sys.executable, '-m', *args]
  print('\n$ ' + ' '.join(['python', '-m', *args]), flush=True)
  result = subprocess.run(command, stdout=subprocess.PIPE if capture else None,
                          text=True)
  if result.returncode:
    sys.exit(f'demo: step failed (exit {result.returncode}): {args[0]}')
  if capture:
    print(result.stdout, end='')
  return result.stdout


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _query_photos(data, count=3):
  """The first query photo of each of the first `count` query identities."""
  folder = os.path.join(data, 'images', 'query')
  first = {}
  for name in sorted(os.listdir(folder)):
    first.setdefault(name.rsplit('_', 1)[0], os.path.join(folder, name))
  return sorted(first.values())[:count]


def _serve_and_query(export_base, data, catalogue):
  port = _free_port()
  print(f'\n$ python -m serving.dev_server --model_base={export_base} '
        f'--port={port} &', flush=True)
  server = subprocess.Popen([sys.executable, '-m', 'serving.dev_server',
                             f'--model_base={export_base}', f'--port={port}'])
  try:
    deadline = time.time() + 120
    while True:
      with socket.socket() as s:
        if s.connect_ex(('127.0.0.1', port)) == 0:
          break
      if server.poll() is not None or time.time() > deadline:
        sys.exit('demo: dev_server did not start')
      time.sleep(0.5)
    images = _query_photos(data)
    _run('serving.client', f'--server=127.0.0.1:{port}',
         f'--landmarks={os.path.join(data, "annotations.csv")}',
         f'--gallery={catalogue}', '--top_k=3',
         *[f'--image={image}' for image in images])
    # No clicked landmarks: the export's predictor finds them.
    _run('serving.client', f'--server=127.0.0.1:{port}',
         f'--gallery={catalogue}', '--top_k=3', f'--image={images[0]}')
  finally:
    server.terminate()
    server.wait(timeout=30)


def _desk_csvs(data, count=12) -> tuple:
  """Two CSVs beside the dataset's annotations: its gallery (the known
  individuals) and the first query photo of `count` query identities with
  their landmarks and a date each but no identity (the desk's queue)."""
  with open(os.path.join(data, 'annotations.csv')) as f:
    rows = list(csv.DictReader(f))
  landmarks = [c for c in rows[0] if c.endswith(('_x', '_y'))]
  gallery = os.path.join(data, 'desk_gallery.csv')
  with open(gallery, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'identity'] + landmarks)
    writer.writerows([r['path'], r['identity']] + [r[c] for c in landmarks]
                     for r in rows if r['split'] == 'gallery')
  first = {}
  for row in sorted((r for r in rows if r['split'] == 'query'),
                    key=lambda r: r['path']):
    first.setdefault(row['identity'], row)
  photos = os.path.join(data, 'desk_photos.csv')
  with open(photos, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'date', 'location'] + landmarks)
    for day, row in enumerate(sorted(first.values(),
                                     key=lambda r: r['path'])[:count]):
      writer.writerow([row['path'], f'2026-06-{day % 28 + 1:02d}',
                       'north bay'] + [row[c] for c in landmarks])
  return gallery, photos


def _database_catalogue(out, data, records, export_base) -> str:
  """The catalogue database, built and calibrated with the export, with
  new photos waiting; returns the command that opens the desk on it."""
  database = os.path.join(out, 'catalogue.sqlite')
  model = artifacts.latest_version(export_base)
  gallery, photos = _desk_csvs(data)
  _run('lmid_tf.identify', 'index', f'--model={model}',
       f'--gallery={gallery}', f'--catalogue={database}')
  _run('lmid_tf.identify', 'calibrate', f'--model={model}',
       f'--catalogue={database}', f'--held_out={records}')
  _run('lmid_tf.identify', 'import', f'--catalogue={database}',
       f'--source={photos}')
  return f'python -m review --catalogue={database} --model={model}'


def define_flags():
  flags.DEFINE_string('out', 'runs/demo', 'Folder for everything the demo '
                      'writes (replaced if it holds an earlier demo).')
  flags.DEFINE_integer('identities', 60, 'Synthetic identities per split.')
  flags.DEFINE_string('flagfile_config', 'configs/demo.flags',
                      'Training flagfile.')


def main(argv):
  del argv
  out = FLAGS.out
  if os.path.exists(out):
    if not os.path.exists(os.path.join(out, MARKER)):
      sys.exit(f'demo: {out} exists and is not a demo folder; choose --out')
    shutil.rmtree(out)
  os.makedirs(out)
  open(os.path.join(out, MARKER), 'w').close()
  data, run = os.path.join(out, 'data'), os.path.join(out, 'run')
  records = os.path.join(data, 'tfrecords')
  export_base = os.path.join(out, 'export')
  catalogue = os.path.join(out, 'catalogue.npz')
  model = os.path.join(run, 'embedding_model.keras')

  _run('data_tools.make_synthetic', f'--out={data}',
       f'--identities={FLAGS.identities}')
  _run('lmid_tf.train', f'--flagfile={FLAGS.flagfile_config}',
       f'--data={records}', f'--run_dir={run}')
  landmarks = os.path.join(out, 'landmarks')
  _run('lmid_tf.train_landmarks', '--flagfile=configs/demo_landmarks.flags',
       f'--data={records}', f'--run_dir={landmarks}')
  _run('serving.export', f'--run_dir={run}', f'--export_base={export_base}',
       f'--landmark_model={os.path.join(landmarks, "landmark_model.keras")}')
  _run('lmid_tf.evaluate', f'--model={export_base}', f'--data={records}',
       f'--out={os.path.join(out, "eval_export")}')
  _run('lmid_tf.identify', 'index', f'--model={model}',
       f'--gallery={records}', f'--catalogue={catalogue}')
  _run('lmid_tf.identify', 'calibrate', f'--model={model}',
       f'--catalogue={catalogue}', f'--held_out={records}')
  _serve_and_query(export_base, data, catalogue)
  review = os.path.join(out, 'review.png')
  _run('lmid_tf.identify', 'query', f'--model={model}',
       f'--catalogue={catalogue}',
       f'--images={",".join(_query_photos(data))}',
       f'--landmarks={os.path.join(data, "annotations.csv")}',
       f'--sheet={review}', '--top_k=3')
  desk = _database_catalogue(out, data, records, export_base)
  print(f'\ndemo: done. Outputs in {out}: data/ (contact_sheet.png), run/ '
        f'(eval/, logs/ for TensorBoard), export/ (SavedModel), '
        f'landmarks/, eval_export/, catalogue.npz, review.png, '
        f'catalogue.sqlite (the catalogue database)')
  print(f'\nOpen the review desk on it (then http://127.0.0.1:8765/):\n  {desk}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'demo')

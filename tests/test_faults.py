"""Faults: real kills during training and catalogue writes, damaged data.

Each kill is a real SIGKILL of a subprocess, so nothing gets to clean up;
what must hold is that nothing already written is lost or half-written.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, kill_rng, tiny_flags
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import indexing
from lmid_tf.data import pipeline
from lmid_tf.data import records

FINGERPRINT = re.compile(r'final weights ([0-9a-f]{16})')
SCHEDULE = ('a trains=all lr=1e-3 epochs=3; '
            'b trains=all lr=1e-4 epochs=3 reconstruct=1')


def _train_command(data, run_dir):
  return [sys.executable, '-m', 'lmid_tf.train', *tiny_flags(
      data, run_dir, deterministic=True, steps_per_epoch=1, schedule=SCHEDULE)]


def _saved_checkpoints(run_dir) -> int:
  state = tf.train.get_checkpoint_state(os.path.join(run_dir, 'checkpoint'))
  return len(state.all_model_checkpoint_paths) and int(
      state.model_checkpoint_path.rsplit('-', 1)[1]) if state else 0


@pytest.mark.slow
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tiny_dataset,
                                                            tmp_path):
  whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
  reference = subprocess.run(_train_command(tiny_dataset, whole), cwd=REPO,
                             capture_output=True, text=True)
  assert reference.returncode == 0, reference.stderr

  seed, rng = kill_rng()
  after, delay = rng.randint(1, 4), rng.uniform(0.0, 0.3)
  where = (f'kill -9 {delay:.2f} s after checkpoint {after} of 6 '
           f'(LMID_KILL_SEED={seed})')
  print(where)
  process = subprocess.Popen(_train_command(tiny_dataset, killed), cwd=REPO,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while _saved_checkpoints(killed) < after:
    assert process.poll() is None and time.time() < deadline
    time.sleep(0.05)
  time.sleep(delay)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  assert not os.path.exists(os.path.join(killed, 'embedding_model.keras'))

  resumed = subprocess.run(_train_command(tiny_dataset, killed), cwd=REPO,
                           capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr
  assert 'resuming at phase' in resumed.stdout, where
  assert (FINGERPRINT.findall(resumed.stdout)
          == FINGERPRINT.findall(reference.stdout)), where
  # Tolerance 0: with --deterministic the same steps give the same bits.
  a, b = (keras.saving.load_model(os.path.join(d, 'embedding_model.keras'))
          for d in (whole, killed))
  for u, v in zip(a.get_weights(), b.get_weights()):
    np.testing.assert_array_equal(u, v, err_msg=where)


# ---- damaged data -------------------------------------------------------------

def _copy(tiny_dataset, tmp_path):
  data = str(tmp_path / 'data')
  shutil.copytree(tiny_dataset, data)
  shard = records.read_metadata(data).shard_paths(data, 'train')[0]
  return data, shard


def _damage(shard, how):
  blob = bytearray(open(shard, 'rb').read())
  if how == 'truncated':
    blob = blob[:-7]
  else:
    blob[len(blob) // 2] ^= 0x10
  with open(shard, 'wb') as f:
    f.write(bytes(blob))


@pytest.mark.parametrize('how', ['truncated', 'bit_flipped'])
def test_damaged_shard_is_named_with_the_record(tiny_dataset, tmp_path, how):
  data, shard = _copy(tiny_dataset, tmp_path)
  count = len(records.read_shards([shard]))
  _damage(shard, how)
  with pytest.raises(ValueError) as raised:
    pipeline.load_train_records(data)
  found = re.search(r'record (\d+) is corrupt or truncated', str(raised.value))
  assert shard in str(raised.value) and found, raised.value
  index = int(found.group(1))
  # A cut end loses the last record; a flipped bit the one it lands in.
  assert index == count - 1 if how == 'truncated' else 0 <= index < count


@pytest.mark.slow
def test_training_on_a_damaged_or_missing_shard_exits_cleanly(tiny_dataset,
                                                              tmp_path):
  data, shard = _copy(tiny_dataset, tmp_path)
  _damage(shard, 'truncated')
  run = lambda: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.train',
       *tiny_flags(data, tmp_path / 'run')],
      cwd=REPO, capture_output=True, text=True)
  damaged = run()
  assert damaged.returncode == 1
  assert damaged.stderr.startswith('train: error: ') and (
      os.path.basename(shard) in damaged.stderr)
  assert 'Traceback' not in damaged.stderr
  os.remove(shard)
  missing = run()
  assert missing.returncode == 1
  assert f'shard {os.path.basename(shard)} of the train split is missing' in (
      missing.stderr)
  # Nothing was trained, so nothing was written.
  assert not os.path.exists(tmp_path / 'run' / 'checkpoint')


@pytest.mark.slow
def test_dataset_with_another_landmark_count_is_refused(trained_run,
                                                        tiny_dataset, tmp_path):
  data, _ = _copy(tiny_dataset, tmp_path)
  metadata = records.read_metadata(data)
  records.write_metadata(data, records.Metadata(
      landmark_names=metadata.landmark_names + ('fin',),
      identities=metadata.identities, splits=metadata.splits,
      channels=metadata.channels))
  out = subprocess.run(
      [sys.executable, '-m', 'lmid_tf.evaluate',
       f'--model={trained_run}/embedding_model.keras', f'--data={data}',
       f'--out={tmp_path}/eval'], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 1
  assert 'has 4 landmarks' in out.stderr and 'expects 3' in out.stderr
  assert not os.path.exists(tmp_path / 'eval' / 'results.json')


# ---- the catalogue under a kill ---------------------------------------------

# Runs `identify` and SIGKILLs it at the worst moments of the catalogue
# write: half-way through the temporary file, or after it is whole but
# before the rename.
KILLER = r'''
import os, runpy, signal, sys
import numpy as np
mode = sys.argv.pop(1)
real_savez, real_replace = np.savez_compressed, os.replace

def half_written(file, **arrays):
  real_savez(file, **arrays)
  with open(file, 'r+b') as f:
    f.truncate(os.path.getsize(file) // 2)
  os.kill(os.getpid(), signal.SIGKILL)

def never_renamed(src, dst):
  if dst.endswith('catalogue.npz'):
    os.kill(os.getpid(), signal.SIGKILL)
  return real_replace(src, dst)

if mode == 'mid_write':
  np.savez_compressed = half_written
else:
  os.replace = never_renamed
sys.argv[0] = 'identify'
runpy.run_module('lmid_tf.identify', run_name='__main__')
'''


@pytest.mark.slow
def test_adding_to_a_catalogue_survives_a_kill(trained_run, tiny_dataset,
                                               tmp_path):
  from test_identify import _export_photos
  model = os.path.join(trained_run, 'embedding_model.keras')
  first, _ = _export_photos(tiny_dataset, 'gallery', tmp_path / 'a', 4)
  more, _ = _export_photos(tiny_dataset, 'query', tmp_path / 'b', 3)
  path = str(tmp_path / 'catalogue.npz')
  catalogue_lib.save(path, indexing.build_catalogue(model, first))
  before = catalogue_lib.load(path)
  add = [f'--model={model}', f'--catalogue={path}', f'--gallery={more}']

  for mode in ('mid_write', 'before_rename'):
    out = subprocess.run([sys.executable, '-c', KILLER, mode, 'index', '--add',
                          *add], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == -signal.SIGKILL, out.stderr
    after = catalogue_lib.load(path)           # the previous one, intact
    np.testing.assert_array_equal(after.paths, before.paths)
    np.testing.assert_array_equal(after.embeddings, before.embeddings)
  assert any('.tmp-' in name for name in os.listdir(tmp_path))

  cli = lambda: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', 'index', '--add', *add],
      cwd=REPO, capture_output=True, text=True)
  added = cli()
  assert added.returncode == 0, added.stderr
  assert 'added 3 images' in added.stdout and '7 images' in added.stdout
  grown = catalogue_lib.load(path)
  np.testing.assert_array_equal(grown.paths[:4], before.paths)
  assert len(grown.paths) == 7
  assert not any('.tmp-' in name for name in os.listdir(tmp_path))
  again = cli()                                # the same photos: skipped
  assert 'added 0 images' in again.stdout and '3 already in it' in again.stdout

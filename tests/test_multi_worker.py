"""Multi-worker training on loopback: two processes, one TF_CONFIG cluster.

The workers run the real CLI. The test kills one worker mid-run with
SIGKILL, checks that the other stops with a clear message within a bounded
time, then reruns both and checks that they resume from the chief's last
checkpoint and end with equal weights.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_flags
from lmid_tf.training import checkpoints

WORKER_TIMEOUT = 20      # --worker_timeout: a step's wait for a lost peer
FINGERPRINT = re.compile(r'final weights ([0-9a-f]{16})')


def _free_ports(count: int) -> list:
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start(run_dirs, data, scratch, logs):
  """One `lmid_tf.train` per run dir, worker i of a loopback cluster."""
  cluster = {'worker': [f'127.0.0.1:{p}' for p in _free_ports(len(run_dirs))]}
  workers = []
  for index, run_dir in enumerate(run_dirs):
    env = dict(os.environ, TMPDIR=str(scratch), TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    args = tiny_flags(data, run_dir, distribution='multi_worker',
                      worker_timeout=WORKER_TIMEOUT, steps_per_epoch=1,
                      phase=('a trains=all lr=1e-3 epochs=12 reconstruct=1',))
    with open(logs[index], 'w') as log:
      workers.append(subprocess.Popen(
          [sys.executable, '-m', 'lmid_tf.train', *args], cwd=REPO, env=env,
          stdout=log, stderr=subprocess.STDOUT))
  return workers


def _wait(process, seconds):
  try:
    return process.wait(timeout=seconds)
  except subprocess.TimeoutExpired:
    process.kill()
    raise AssertionError(f'worker still running after {seconds} s')


@pytest.mark.slow
def test_two_workers_fail_together_then_resume_as_one(tiny_dataset,
                                                      tmp_path):
  chief_dir, other_dir = tmp_path / 'run', tmp_path / 'worker_run'
  scratch = tmp_path / 'scratch'
  scratch.mkdir()
  logs = [tmp_path / 'chief.log', tmp_path / 'worker.log']
  # First launch: worker 1 is given its own --run_dir, so anything it
  # wrote there would show; it must write nothing.
  chief, worker = _start([chief_dir, other_dir], tiny_dataset, scratch, logs)
  index = chief_dir / 'checkpoint' / 'checkpoint'
  deadline = time.time() + 240
  while not index.exists():
    assert chief.poll() is None and worker.poll() is None, (
        logs[0].read_text()[-2000:] + logs[1].read_text()[-2000:])
    assert time.time() < deadline, 'no checkpoint within 240 s'
    time.sleep(0.2)
  worker.send_signal(signal.SIGKILL)
  killed = time.time()
  assert _wait(chief, 3 * WORKER_TIMEOUT + 30) == 1
  waited = time.time() - killed
  output = logs[0].read_text()
  assert 'train: error: worker 0 lost contact with the other workers' in output
  assert 'Rerun every worker' in output and str(chief_dir) in output
  print(f'chief stopped {waited:.1f} s after worker 1 was killed')
  worker.wait()
  assert not other_dir.exists()
  assert not (chief_dir / 'embedding_model.keras').exists()
  stopped_at = checkpoints.read_position(str(chief_dir / 'checkpoint'))
  assert stopped_at[1] >= 1

  # Second launch: both with the same command; they resume together.
  leftover = set(os.listdir(scratch))    # a SIGKILLed worker cannot clean up
  workers = _start([chief_dir, chief_dir], tiny_dataset, scratch, logs)
  for process in workers:
    assert _wait(process, 300) == 0, (logs[0].read_text()[-3000:]
                                      + logs[1].read_text()[-3000:])
  outputs = [log.read_text() for log in logs]
  for output in outputs:
    assert (f'resuming at phase {stopped_at[0]}, epoch {stopped_at[1]}'
            in output), output[-2000:]
  prints = [FINGERPRINT.findall(output) for output in outputs]
  assert len(prints[0]) == len(prints[1]) == 1
  assert prints[0] == prints[1]                  # replicas stayed in sync
  assert 'wrote' in outputs[0] and 'wrote' not in outputs[1]
  assert (chief_dir / 'embedding_model.keras').exists()
  assert checkpoints.read_position(str(chief_dir / 'checkpoint')) == (1, 0)
  # This time the worker's checkpoint scratch folder is removed.
  assert not [f for f in set(os.listdir(scratch)) - leftover
              if f.startswith('lmid_tf_worker')]

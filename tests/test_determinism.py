"""--deterministic at the quick start's size: bit-equal reruns, and a run
killed anywhere (stage 2 included) and resumed equals them (issue 24).

The quick start's data (make_synthetic, 60 identities) and its flagfile
(configs/demo.flags) with shorter phases: the divergence this guards
against entered at the first step of stage 2b, where the reconstruction
head's gradient joins the embedding's (lmid_tf/training/determinism.py).
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import REPO, kill_rng
from lmid_tf.training import determinism

FINGERPRINT = re.compile(r'final weights ([0-9a-f]{16})')
# Checkpoints 1-2 are stage 1, 3 stage 2a, 4-5 stage 2b.
SCHEDULE = ('--schedule=stage1 trains=all lr=1e-3 epochs=2 warmup_epochs=1; '
            'stage2a trains=reconstruction lr=1e-3 epochs=1 reconstruct=1; '
            'stage2b trains=all lr=1e-4 epochs=2 reconstruct=1')
EPOCHS = 5


@pytest.mark.slow
def test_enable_turns_the_memory_optimizer_off_in_function_configs():
  script = ('from lmid_tf.training import determinism as d; '
            'a = d.memory_optimizer_disabled(); d.enable(0); '
            'print(a, d.memory_optimizer_disabled())')
  out = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                       capture_output=True, text=True)
  assert out.stdout.split() == ['False', 'True'], out.stderr
  assert not determinism.memory_optimizer_disabled()   # not in this process


# One stage-2b gradient (every loss, everything trainable) of the demo
# recipe's network on its first batch, fingerprinted.
GRADIENT = r"""
import sys
from absl import flags
import keras
import tensorflow as tf
from lmid_tf import config
from lmid_tf.data import pipeline
from lmid_tf.modeling import model as model_lib
from lmid_tf.modeling import objective
from lmid_tf.speed import fused_batch_norm
from lmid_tf.training import checkpoints
from lmid_tf.training import determinism
config.define_flags()
flags.FLAGS(['gradient', '--flagfile=' + sys.argv[1], '--data=' + sys.argv[2],
             '--run_dir=unused', '--deterministic'])
cfg = config.build(config.from_flags(flags.FLAGS))
determinism.enable(cfg.seed)
net = model_lib.build_model(cfg.model)
trainer = objective.Objective(net, cfg.model.num_classes, cfg.losses)
fused_batch_norm.fuse(net)
model_lib.set_trainable(net, ('all',))
trainer.compile(keras.optimizers.Adam(1e-4), reconstruct=True)
inputs, targets = next(iter(pipeline.train_dataset(
    cfg.data, cfg.preprocess, cfg.inputs,
    pipeline.load_train_records(cfg.data))))[:2]

@tf.function
def gradient():
  with tf.GradientTape() as tape:
    outputs = net(inputs, training=True)
    loss = trainer.compute_losses(outputs, targets,
                                  trainer.centers(targets['label']))['loss']
  return tape.gradient(loss, net.trainable_variables)

print('gradient', checkpoints.fingerprint([g.numpy() for g in gradient()]))
"""


@pytest.fixture(scope='module')
def demo_flagfile(tmp_path_factory):
  """The quick start's data and configs/demo.flags with 5 steps per epoch
  and 5 epochs."""
  folder = tmp_path_factory.mktemp('demo')
  made = subprocess.run([sys.executable, '-m', 'data_tools.make_synthetic',
                         f'--out={folder}/data', '--identities=60'],
                        cwd=REPO, capture_output=True, text=True)
  assert made.returncode == 0, made.stderr
  with open(os.path.join(REPO, 'configs', 'demo.flags')) as f:
    kept = [line.strip() for line in f if line.startswith('--') and not
            line.startswith(('--schedule=', '--steps_per_epoch='))]
  flagfile = folder / 'short_demo.flags'
  flagfile.write_text('\n'.join(kept + ['--steps_per_epoch=5', SCHEDULE]))
  return str(flagfile), str(folder / 'data' / 'tfrecords')


def _command(demo_flagfile, run_dir):
  flagfile, data = demo_flagfile
  return [sys.executable, '-m', 'lmid_tf.train', f'--flagfile={flagfile}',
          f'--data={data}', f'--run_dir={run_dir}', '--deterministic']


def _checkpoints(run_dir) -> int:
  path = tf.train.latest_checkpoint(os.path.join(run_dir, 'checkpoint'))
  return int(path.rsplit('-', 1)[1]) if path else 0


def _run_timed(command):
  """Runs to the end; returns (stdout, seconds at which each checkpoint
  appeared, from the start)."""
  run_dir = command[-2].split('=', 1)[1]
  start, seen = time.time(), [0.0]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
  while process.poll() is None:
    if _checkpoints(run_dir) >= len(seen):
      seen.append(time.time() - start)
    time.sleep(0.05)
  out = process.stdout.read()
  assert process.returncode == 0, out
  return out, seen


@pytest.mark.slow
def test_a_stage2_gradient_is_bit_equal_in_two_processes(demo_flagfile):
  # Within one process it always was; two processes differed in the
  # backbone's and embedding's gradients before the fix.
  processes = [subprocess.Popen([sys.executable, '-c', GRADIENT,
                                 *demo_flagfile], cwd=REPO,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
  outs = [p.communicate() for p in processes]
  found = [re.findall(r'gradient ([0-9a-f]{16})', out) for out, _ in outs]
  assert found[0] and found[0] == found[1], [err[-2000:] for _, err in outs]


@pytest.mark.slow
def test_reruns_and_a_killed_run_resumed_are_bit_equal(demo_flagfile,
                                                       tmp_path):
  first, times = _run_timed(_command(demo_flagfile, tmp_path / 'first'))
  second = subprocess.run(_command(demo_flagfile, tmp_path / 'second'),
                          cwd=REPO, capture_output=True, text=True)
  reference = FINGERPRINT.findall(first)
  assert len(reference) == 1 and "memory optimizer off" in first
  assert FINGERPRINT.findall(second.stdout) == reference, second.stderr

  # Killed during epoch `after + 1` (any of stage 1, 2a, 2b), part-way:
  # the delay is a fraction of how long that epoch took in the first run.
  seed, rng = kill_rng()
  after = rng.randrange(EPOCHS)
  epoch_seconds = times[after + 1] - times[after] if len(times) > after + 1 \
      else 5.0
  delay = rng.uniform(0.0, 0.8) * epoch_seconds
  where = (f'kill -9 {delay:.1f} s after checkpoint {after} of {EPOCHS} '
           f'(LMID_KILL_SEED={seed})')
  print(where)
  killed = str(tmp_path / 'killed')
  process = subprocess.Popen(_command(demo_flagfile, killed), cwd=REPO,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while after and _checkpoints(killed) < after:
    assert process.poll() is None and time.time() < deadline, where
    time.sleep(0.05)
  time.sleep(delay)
  assert process.poll() is None, f'finished before the kill: {where}'
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  saved = _checkpoints(killed)

  resumed = subprocess.run(_command(demo_flagfile, killed), cwd=REPO,
                           capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr
  assert ('resuming at phase' in resumed.stdout) == bool(saved), where
  assert FINGERPRINT.findall(resumed.stdout) == reference, where

r"""Where lmid-tf's training step spends its time: a tf.profiler trace, read.

  python -m benchmarks.op_profile --backbone=resnet50 --size=128 --batch=32 \
      --setting=bf16_fused_fusedadam --logdir=runs/profile

Traces --steps training steps (after warm-up) of the same step that
benchmarks/peer_pytorch.py times, under a benchmarks/tf_step setting. The
trace stays in --logdir for TensorBoard's Profile tab (which needs the
tensorboard-plugin-profile package); this script reads it itself
(the XSpace protobuf that TensorFlow writes) and prints two tables:

* op time per step by phase (forward, backward, optimizer) and by part of
  the network (backbone, reconstruction head, the rest: embedding, losses);
* the op types that take the most time;
* with --scope, the op types of the ops inside the scopes whose names
  start with it (e.g. --scope=reconstruction_up: the head's upsamplings).

Op time is the sum of the TensorFlow ops' own durations; ops that run side by
side (inter-op parallelism) both count, so shares are of op time, and the
step's wall time is printed beside them.
"""

import collections
import glob
import os
import re
import sys
import time
import warnings

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-direct-tensorflow-import

from benchmarks import machine
from benchmarks import tf_step

PHASES = ('forward', 'backward', 'optimizer')
CALLS = ('StatefulPartitionedCall', 'PartitionedCall')
PARTS = ('backbone', 'reconstruction', 'rest')


def trace(run, steps: int, logdir: str) -> tuple:
  """Runs `run` `steps` times under the profiler; returns the newest
  .xplane.pb it wrote and the wall seconds per step."""
  tf.profiler.experimental.start(logdir)
  start = time.perf_counter()
  try:
    for _ in range(steps):
      run()
  finally:
    seconds = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
  paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
  return max(paths, key=os.path.getmtime), seconds


def op_events(xplane_path: str):
  """Yields (op name, op type, seconds) of every TensorFlow op run on the
  host. Op events are named 'scope/name:Type'; the executor's own events
  (ExecutorState::Process, KernelAndDeviceFunc::Run, ...) and function
  calls, which contain the ops they run, are skipped."""
  space = xplane_pb2.XSpace()
  with open(xplane_path, 'rb') as f:
    space.ParseFromString(f.read())
  for plane in space.planes:
    if plane.name != '/host:CPU':
      continue
    for line in plane.lines:
      if line.name == 'python':   # the Python thread's eager/API events
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        op, colon, op_type = name.rpartition(':')
        if (colon and op and ' ' not in name and '::' not in name
            and op_type not in CALLS):
          yield op, op_type, event.duration_ps * 1e-12


def phase_of(op: str) -> str:
  scopes = op.split('/')
  if 'gradient_tape' in scopes:
    return 'backward'
  # Keras numbers a process's later optimizers: adam, adam_1, fused_adam_2.
  if any(re.fullmatch(r'(fused_)?adam(_\d+)?|sgd(_\d+)?', s) for s in scopes):
    return 'optimizer'
  return 'forward'


def part_of(op: str) -> str:
  for scope in op.split('/'):
    if scope.startswith('backbone'):
      return 'backbone'
    if scope.startswith('reconstruction'):
      return 'reconstruction'
  return 'rest'


def breakdown(events, steps: int) -> tuple:
  """(seconds per step by (phase, part), by op type; op counts per step)."""
  by_part = collections.Counter()
  by_type = collections.Counter()
  count = collections.Counter()
  for op, op_type, seconds in events:
    by_part[phase_of(op), part_of(op)] += seconds / steps
    by_type[op_type] += seconds / steps
    count[op_type] += 1 / steps
  return by_part, by_type, count


def in_scope(events, scope: str):
  """The events of ops inside a scope whose name starts with `scope`
  (Keras numbers repeated names: reconstruction_up0_1)."""
  for op, op_type, seconds in events:
    if any(name.startswith(scope) for name in op.split('/')[:-1]):
      yield op, op_type, seconds


def type_table(by_type, count, total: float, top: int) -> list:
  lines = ['| op type | ms per step | share | ops per step |',
           '| --- | ---: | ---: | ---: |']
  for op_type, seconds in by_type.most_common(top):
    lines.append(f'| {op_type} | {1000 * seconds:.1f} | '
                 f'{100 * seconds / total:.1f} % | {count[op_type]:.0f} |')
  return lines


def tables(by_part, by_type, count, wall: float, top: int = 15) -> str:
  total = sum(by_part.values())
  lines = [f'wall time {1000 * wall:.0f} ms per step; op time '
           f'{1000 * total:.0f} ms per step', '',
           '| phase | ' + ' | '.join(PARTS) + ' | all |',
           '| --- |' + ' ---: |' * (len(PARTS) + 1)]
  for phase in PHASES:
    cells = [by_part[phase, part] for part in PARTS]
    lines.append(f'| {phase} | ' + ' | '.join(
        f'{1000 * c:.0f} ms ({100 * c / total:.0f} %)' for c in cells)
                 + f' | {1000 * sum(cells):.0f} ms ({100 * sum(cells) / total:.0f} %) |')
  return '\n'.join(lines + [''] + type_table(by_type, count, total, top))


FLAGS = flags.FLAGS


def define_flags():
  tf_step.define_shape_flags()
  flags.DEFINE_string('setting', 'bf16_fused_fusedadam',
                      'benchmarks/tf_step setting of the traced step.')
  flags.DEFINE_integer('steps', 5, 'Traced steps (after 3 warm-up steps).')
  flags.DEFINE_integer('top', 15, 'Op types to list.')
  flags.DEFINE_string('logdir', 'runs/profile', 'Where the trace goes.')
  flags.DEFINE_string('scope', None, 'Also list the op types inside the '
                      'scopes whose names start with this, e.g. '
                      'reconstruction_up (shares are of the whole step).')


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  print('command: python -m benchmarks.op_profile ' + ' '.join(sys.argv[1:]))
  print(machine.describe())
  tf.get_logger().setLevel('ERROR')
  try:
    setting = tf_step.options(FLAGS.setting)
  except ValueError as error:
    raise app.UsageError(f'--setting: {error}')
  run = tf_step.step_function(FLAGS.backbone, FLAGS.size, FLAGS.batch,
                              FLAGS.channels, 3, **setting)
  for _ in range(3):
    run()
  path, wall = trace(run, FLAGS.steps, FLAGS.logdir)
  print(f'{FLAGS.backbone} at {FLAGS.size} px, batch {FLAGS.batch}, '
        f'{FLAGS.setting}, {FLAGS.steps} traced steps; trace: {path}\n')
  events = list(op_events(path))
  by_part, by_type, count = breakdown(events, FLAGS.steps)
  print(tables(by_part, by_type, count, wall, FLAGS.top))
  if FLAGS.scope:
    _, scoped, scoped_count = breakdown(in_scope(events, FLAGS.scope),
                                        FLAGS.steps)
    print(f'\nops inside scopes {FLAGS.scope}*: '
          f'{1000 * sum(scoped.values()):.1f} ms per step\n')
    print('\n'.join(type_table(scoped, scoped_count, sum(by_part.values()),
                               FLAGS.top)))


if __name__ == '__main__':
  define_flags()
  app.run(main)

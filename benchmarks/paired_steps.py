r"""Speed settings of one training step, timed against each other in
alternating blocks in one process.

  python -m benchmarks.paired_steps --backbone=resnet50 --size=128 --batch=32 \
      --settings=bf16_fused_fusedadam_matmul,bf16_fused_fusedadam_matmul_upsample \
      --blocks=12 --steps=5

On a shared 2-core machine one setting's rate moves by up to 20 % between
runs (docs/journal/2026-12-07-zen4-speed.md), more than a change of a few
per cent is worth; timed one after the other, settings also meet different
moments of the machine. Here every setting's step is built once (the
benchmarks/tf_step settings), warmed up, and then timed for --steps steps in
turn (in reverse order every other round), --blocks times round, so
drift falls on all of them alike. Each
setting is compared with the first block by block: the table gives the
median of the per-block ratios and in how many blocks it was faster.
"""

import statistics
import sys
import time
import warnings

from absl import app
from absl import flags

from benchmarks import machine
from benchmarks import tf_step

FLAGS = flags.FLAGS


def time_blocks(steps: dict, blocks: int, steps_per_block: int) -> dict:
  """{name: no-argument step} -> {name: [seconds per step, one per block]},
  the steps timed in turn within each block, in reverse order every other
  block (so that no setting always follows the same one)."""
  seconds = {name: [] for name in steps}
  for block in range(blocks):
    order = list(steps.items())
    for name, step in order if block % 2 == 0 else reversed(order):
      start = time.perf_counter()
      for _ in range(steps_per_block):
        step()
      seconds[name].append((time.perf_counter() - start) / steps_per_block)
  return seconds


def compare(seconds: dict, batch: int) -> list:
  """Rows (name, median img/s, median ratio to the first setting, blocks
  faster than it, blocks) from time_blocks' result."""
  names = list(seconds)
  reference = seconds[names[0]]
  rows = []
  for name in names:
    ratios = [ref / own for ref, own in zip(reference, seconds[name])]
    rows.append((name, batch / statistics.median(seconds[name]),
                 statistics.median(ratios), sum(r > 1 for r in ratios),
                 len(ratios)))
  return rows


def table(rows: list) -> str:
  lines = ['| setting | img/s (median block) | speed against the first '
           '(median of blocks) | blocks faster |',
           '| --- | ---: | ---: | ---: |']
  for index, (name, rate, ratio, faster, blocks) in enumerate(rows):
    against = '(reference)' if not index else f'{ratio:.3f}x'
    wins = '' if not index else f'{faster} of {blocks}'
    lines.append(f'| {name} | {rate:.1f} | {against} | {wins} |')
  return '\n'.join(lines)


def define_flags():
  tf_step.define_shape_flags()
  flags.DEFINE_list('settings', None, 'benchmarks/tf_step settings; the '
                    'first is the reference.', required=True)
  flags.DEFINE_integer('blocks', 12, 'Rounds of the settings.')
  flags.DEFINE_integer('steps', 5, 'Steps per setting per block.')
  flags.DEFINE_integer('landmarks', 3, 'Heatmap channels (k).')


def main(argv):
  del argv
  warnings.filterwarnings('ignore')
  command = 'python -m benchmarks.paired_steps ' + ' '.join(sys.argv[1:])
  print('command: ' + command, flush=True)
  steps = {}
  for setting in FLAGS.settings:
    steps[setting] = tf_step.step_function(
        FLAGS.backbone, FLAGS.size, FLAGS.batch, FLAGS.channels,
        FLAGS.landmarks, **tf_step.options(setting))
    for _ in range(2):   # tracing and oneDNN's first-call work
      steps[setting]()
  seconds = time_blocks(steps, FLAGS.blocks, FLAGS.steps)
  print(f'{FLAGS.backbone} at {FLAGS.size} px, batch {FLAGS.batch}, '
        f'{FLAGS.channels} + {FLAGS.landmarks} channels; {FLAGS.blocks} '
        f'blocks of {FLAGS.steps} steps per setting')
  print(table(compare(seconds, FLAGS.batch)))
  machine.print_footer(command)


if __name__ == '__main__':
  define_flags()
  app.run(main)

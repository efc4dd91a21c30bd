r"""One CMC plot of several evaluations (results.json files).

  python -m benchmarks.cmc_plot --out=docs/cmc.png \
      --results="runs/a/robustness/clean.json=aligned + heatmaps, clean" \
      --results="runs/b/eval/results.json=baseline"
"""

import json
import sys

from absl import app
from absl import flags
import numpy as np

from lmid_tf import cli
from lmid_tf import files

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string('results', [], 'PATH=label of a results.json '
                            '(evaluate, benchmarks.robustness).')
  flags.DEFINE_string('out', 'cmc.png', 'Output PNG.')
  flags.DEFINE_string('title', 'CMC, synthetic protocol (3,750 queries)',
                      'Plot title.')


def main(argv):
  del argv
  if not FLAGS.results:
    raise app.UsageError('at least one --results=PATH=label')
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  figure, axes = plt.subplots(figsize=(6.5, 4.5), dpi=100)
  for item in FLAGS.results:
    path, sep, label = item.partition('=')
    if not sep:
      raise ValueError(f'--results={item!r}: expected PATH=label')
    with open(path) as f:
      cmc = np.array(json.load(f)['cmc'])
    ranks = np.arange(1, len(cmc) + 1)
    axes.plot(ranks, 100 * cmc, marker='o', label=f'{label} '
              f'({100 * cmc[0]:.1f}%)')
  axes.set(xlabel='rank', ylabel='identification rate (%)', ylim=(0, 102),
           xticks=ranks, title=FLAGS.title)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, loc='lower right')
  figure.tight_layout()
  with files.replacing(FLAGS.out, '.png') as tmp:
    figure.savefig(tmp)
  print('command: python -m benchmarks.cmc_plot ' + ' '.join(sys.argv[1:]))
  print(f'cmc_plot: wrote {FLAGS.out}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'cmc_plot')

r"""Mean ± standard error over seeds of several evaluations, and their paired
differences: the tables of docs/MANTA.md.

  python -m benchmarks.seed_table --seeds=0,1,2 \
      --row="ours=runs/manta_s{seed}/tps/robustness/clean.json" \
      --row="baseline=runs/manta_s{seed}/baseline/robustness/clean.json" \
      --reference=baseline

Each --row is `label=path`, the path a results.json (lmid_tf.evaluate,
benchmarks.robustness) with `{seed}` where the seed goes. For every row it
prints top-1, top-5, mAP and mINP as mean ± standard error (the sample
standard deviation over the seeds / √n), the per-seed top-1, and, with
--reference, the row's top-1 minus the reference's, paired by seed (each
seed's difference first, then their mean ± standard error), which is what
says whether a gain is larger than the seeds' spread. With --by_visible it
also prints top-1 by the number of landmarks visible in the query (the
files' `by_visible`, benchmarks.robustness --by_visible). --ratio=a/b prints
row a's top-1 as a share of row b's, per seed and as mean ± standard error
(for instance how much of its clean top-1 a model keeps under noise).
Reads only; writes nothing.
"""

import json
import math
import sys

from absl import app
from absl import flags
import numpy as np

from lmid_tf import cli

FLAGS = flags.FLAGS
METRICS = (('top1', 'top-1 %'), ('top5', 'top-5 %'), ('mAP', 'mAP %'),
           ('mINP', 'mINP %'))


def define_flags():
  flags.DEFINE_multi_string('row', [], 'label=path of a results.json, with '
                            '{seed} in the path.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to put into {seed}.')
  flags.DEFINE_string('reference', '', 'Label of the row the others are '
                      'compared with, paired by seed.')
  flags.DEFINE_multi_string('ratio', [], 'a/b: row a\'s top-1 as a share of '
                            'row b\'s, per seed.')
  flags.DEFINE_bool('by_visible', False, 'Also top-1 by the number of '
                    'visible landmarks in the query.')


def mean_and_error(values) -> tuple:
  """(mean, standard error of the mean) of `values`; the error is nan for
  one value (no spread can be measured)."""
  values = np.asarray(values, dtype=float)
  if len(values) < 2:
    return float(values.mean()), float('nan')
  return float(values.mean()), float(values.std(ddof=1) / math.sqrt(
      len(values)))


def _pm(values, scale=100.0) -> str:
  mean, error = mean_and_error(np.asarray(values) * scale)
  return f'{mean:.2f}' + ('' if math.isnan(error) else f' ± {error:.2f}')


def parse_rows(specs) -> dict:
  """{label: path pattern} from `label=path` strings, in their order."""
  rows = {}
  for spec in specs:
    # The last '=': a label may hold one (`--alignment=tps`), a path not.
    label, sep, path = spec.rpartition('=')
    if not sep or not label or not path:
      raise ValueError(f'--row={spec!r}: expected label=path')
    if label in rows:
      raise ValueError(f'--row: label {label!r} given twice')
    rows[label] = path
  return rows


def load(rows: dict, seeds) -> dict:
  """{label: [results of each seed]}; a missing or unreadable file, or one
  without a metric, is an error naming it. Each results dict also holds its
  'path'."""
  loaded = {}
  for label, pattern in rows.items():
    loaded[label] = []
    for seed in seeds:
      path = pattern.replace('{seed}', str(seed))
      try:
        with open(path, encoding='utf-8') as f:
          results = json.load(f)
      except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f'row {label!r}, seed {seed}: cannot read {path}: '
                         f'{e}') from None
      missing = [key for key, _ in METRICS if key not in results]
      if missing:
        raise ValueError(f'row {label!r}: {path} has no {", ".join(missing)} '
                         '(not a results.json)')
      loaded[label].append(dict(results, path=path))
  return loaded


def table(loaded: dict, seeds, reference: str = '') -> str:
  """The markdown table of every row (module docstring)."""
  header = ['model', 'seeds'] + [name for _, name in METRICS] + [
      'top-1 per seed']
  if reference:
    header += [f'top-1 − {reference}, paired']
  lines = ['| ' + ' | '.join(header) + ' |',
           '| ' + ' | '.join(['---'] * len(header)) + ' |']
  for label, results in loaded.items():
    cells = [label, ','.join(map(str, seeds))]
    cells += [_pm([r[key] for r in results]) for key, _ in METRICS]
    cells.append(', '.join(f'{100 * r["top1"]:.2f}' for r in results))
    if reference:
      cells.append('' if label == reference else paired(
          results, loaded[reference]))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def paired(results, reference) -> str:
  """'d0, d1, d2 → mean ± SE' of top-1 differences, paired by seed."""
  differences = [100 * (a['top1'] - b['top1'])
                 for a, b in zip(results, reference)]
  mean, error = mean_and_error(differences)
  return (', '.join(f'{d:+.2f}' for d in differences) + f' → {mean:+.2f}'
          + ('' if math.isnan(error) else f' ± {error:.2f}'))


def visible_table(loaded: dict) -> str:
  """Top-1 by visible landmarks in the query, mean ± SE over seeds (a group
  with no queries in a seed counts in no mean: '–' where none has any)."""
  first = next(iter(loaded.values()))[0]
  groups = list(first.get('by_visible', {}))
  lines = ['| top-1 % | ' + ' | '.join(
      f'{g} visible' for g in groups) + ' | queries per seed |',
           '| --- |' + ' --- |' * (len(groups) + 1)]
  for label, results in loaded.items():
    for r in results:
      if list(r.get('by_visible', {})) != groups:
        raise ValueError(
            f'row {label!r}: {r["path"]} has visibility groups '
            f'{list(r.get("by_visible", {}))}, not {groups} (run '
            'benchmarks.robustness --by_visible on the same landmarks)')
    cells = []
    for g in groups:
      values = [r['by_visible'][g]['top1'] for r in results
                if r['by_visible'][g]['queries']]
      cells.append(_pm(values) if values else '–')
    counts = ' · '.join('/'.join(str(r['by_visible'][g]['queries'])
                                 for g in groups) for r in results)
    lines.append(f'| {label} | ' + ' | '.join(cells) + f' | {counts} |')
  return '\n'.join(lines)


def ratio(loaded: dict, spec: str) -> str:
  """'a / b: per-seed shares → mean ± SE' of top-1."""
  a, sep, b = spec.partition('/')
  if not sep or a not in loaded or b not in loaded:
    raise ValueError(f'--ratio={spec!r}: expected a/b of two --row labels')
  shares = [x['top1'] / y['top1'] for x, y in zip(loaded[a], loaded[b])]
  return (f'{a} / {b}, top-1: '
          + ', '.join(f'{100 * s:.2f}' for s in shares)
          + f' → {_pm(shares)} %')


def main(argv):
  del argv
  rows = parse_rows(FLAGS.row)
  if not rows:
    raise app.UsageError('at least one --row=label=path')
  if FLAGS.reference and FLAGS.reference not in rows:
    raise ValueError(f'--reference={FLAGS.reference!r} is not a --row label')
  loaded = load(rows, FLAGS.seeds)
  print('command: python -m benchmarks.seed_table ' + ' '.join(
      f"'{a}'" if ' ' in a else a for a in sys.argv[1:]))
  print(table(loaded, FLAGS.seeds, FLAGS.reference))
  if FLAGS.by_visible:
    print()
    print(visible_table(loaded))
  for spec in FLAGS.ratio:
    print(ratio(loaded, spec))


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'seed_table')

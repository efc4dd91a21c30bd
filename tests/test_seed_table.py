"""benchmarks/seed_table.py: means, standard errors and paired differences
over seeds, against values worked out by hand."""

import json
import subprocess
import sys

import pytest

from benchmarks import seed_table
from conftest import REPO


def _write(folder, name, seed, top1, by_visible=None):
  path = folder / f'{name}_{seed}.json'
  results = {'top1': top1, 'top5': top1 + 0.1, 'mAP': top1 - 0.1,
             'mINP': top1 / 2, 'cmc': [top1]}
  if by_visible is not None:
    results['by_visible'] = by_visible
  path.write_text(json.dumps(results))


def _visible(top1_5, top1_4, top1_3):
  return {'5': {'top1': top1_5, 'queries': 10},
          '4': {'top1': top1_4, 'queries': 6},
          '<=3': {'top1': top1_3, 'queries': 4}}


@pytest.fixture
def two_rows(tmp_path):
  # ours 0.90, 0.94, 0.98 (mean 94, SD 4, SE 4/sqrt(3) = 2.31);
  # base 0.01, 0.02, 0.06; paired ours - base: 89, 92, 92 (mean 91, SD
  # sqrt(3), SE 1).
  for seed, (ours, base) in enumerate([(0.90, 0.01), (0.94, 0.02),
                                       (0.98, 0.06)]):
    _write(tmp_path, 'ours', seed, ours, _visible(ours, ours - 0.1, 0.5))
    _write(tmp_path, 'base', seed, base, _visible(base, base, base))
  return tmp_path


def test_mean_and_standard_error():
  assert seed_table.mean_and_error([1, 2, 3]) == pytest.approx(
      (2.0, 1 / 3 ** 0.5))
  mean, error = seed_table.mean_and_error([5])
  assert mean == 5.0 and error != error      # nan: no spread from one seed
  assert seed_table._pm([0.5]) == '50.00'


def test_table_pairs_by_seed(two_rows):
  rows = seed_table.parse_rows([f'ours={two_rows}/ours_{{seed}}.json',
                                f'base={two_rows}/base_{{seed}}.json'])
  loaded = seed_table.load(rows, ['0', '1', '2'])
  text = seed_table.table(loaded, ['0', '1', '2'], reference='base')
  ours, base = text.splitlines()[2:]
  assert ours.startswith('| ours | 0,1,2 | 94.00 ± 2.31 | 104.00 ± 2.31 | '
                         '84.00 ± 2.31 | 47.00 ± 1.15 | 90.00, 94.00, 98.00 |')
  assert ours.endswith('| +89.00, +92.00, +92.00 → +91.00 ± 1.00 |')
  assert base.startswith('| base | 0,1,2 | 3.00 ± 1.53 |')
  assert base.endswith('| 1.00, 2.00, 6.00 |  |')
  visible = seed_table.visible_table(loaded).splitlines()
  assert visible[2] == ('| ours | 94.00 ± 2.31 | 84.00 ± 2.31 | '
                        '50.00 ± 0.00 | 10/6/4 · 10/6/4 · 10/6/4 |')
  # base / ours: 1/90, 2/94, 6/98 of top-1.
  assert seed_table.ratio(loaded, 'base/ours').startswith(
      'base / ours, top-1: 1.11, 2.13, 6.12 → 3.12 ± 1.53 %')


def test_bad_input_names_what_is_wrong(two_rows):
  with pytest.raises(ValueError, match='expected label=path'):
    seed_table.parse_rows(['no label here'])
  assert seed_table.parse_rows(['--alignment=tps=a/{seed}.json']) == {
      '--alignment=tps': 'a/{seed}.json'}
  rows = seed_table.parse_rows([f'ours={two_rows}/ours_{{seed}}.json'])
  with pytest.raises(ValueError, match=r"row 'ours', seed 7: cannot read "
                     r'.*ours_7.json'):
    seed_table.load(rows, ['7'])
  loaded = seed_table.load(rows, ['0'])
  with pytest.raises(ValueError, match='expected a/b of two --row labels'):
    seed_table.ratio(loaded, 'ours/missing')
  (two_rows / 'short_0.json').write_text('{"top1": 0.5}')
  rows = seed_table.parse_rows([f'short={two_rows}/short_{{seed}}.json'])
  with pytest.raises(ValueError, match=r'short_0.json has no top5, mAP, '
                     'mINP'):
    seed_table.load(rows, ['0'])
  # Three landmarks: groups 3, 2, <=1; one file without them is named.
  _write(two_rows, 'three', 0, 0.5, {
      '3': {'top1': 0.6, 'queries': 5}, '2': {'top1': 0.4, 'queries': 3},
      '<=1': {'top1': 0.0, 'queries': 0}})
  _write(two_rows, 'three', 1, 0.7, {
      '3': {'top1': 0.8, 'queries': 5}, '2': {'top1': 0.6, 'queries': 3},
      '<=1': {'top1': 0.5, 'queries': 2}})
  _write(two_rows, 'three', 2, 0.7)
  rows = seed_table.parse_rows([f'three={two_rows}/three_{{seed}}.json'])
  assert seed_table.visible_table(seed_table.load(rows, ['0', '1'])) == (
      '| top-1 % | 3 visible | 2 visible | <=1 visible | queries per seed |\n'
      '| --- | --- | --- | --- | --- |\n'
      '| three | 70.00 ± 10.00 | 50.00 ± 10.00 | 50.00 | 5/3/0 · 5/3/2 |')
  with pytest.raises(ValueError, match=r'three_2.json has visibility groups '
                     r'\[\]'):
    seed_table.visible_table(seed_table.load(rows, ['0', '1', '2']))


@pytest.mark.slow
def test_the_command_line_exits_1_naming_the_file(two_rows):
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.seed_table', '--seeds=0,9',
       f'--row=ours={two_rows}/ours_{{seed}}.json'], cwd=REPO,
      capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert 'seed_table: error: row \'ours\', seed 9: cannot read' in (
      result.stderr)

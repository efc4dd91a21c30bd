"""docs/RESULTS.md and docs/results.csv hold the same rows, and every row's
config is a file of the repository."""

import collections
import csv
import os
import re

import pytest

from conftest import REPO
from tools import results_csv
from tools.results_csv import CSV, FIXED, RESULTS, markdown_rows


def csv_rows(path: str = CSV) -> dict:
  """{(section, row): {metric: value, and config/command/date/CPU}}."""
  rows = collections.defaultdict(dict)
  with open(path, newline='', encoding='utf-8') as f:
    for line in csv.DictReader(f):
      row = rows[line['section'], line['row']]
      assert line['metric'] not in row, (line['row'], line['metric'])
      float(line['value'])            # machine-readable: plain numbers
      row[line['metric']] = line['value']
      for name in FIXED:
        value = line[name.lower()]
        assert row.setdefault(name, value) == value, (line['row'], name)
  return dict(rows)


def test_results_md_and_csv_hold_the_same_rows():
  markdown, table = markdown_rows(), csv_rows()
  assert sorted(markdown) == sorted(table)
  for key, cells in markdown.items():
    shown = {column: cell for column, cell in cells.items()
             if cell and column != 'row'}
    quoted = {name: f'`{value}`' if name in ('config', 'command') else value
              for name, value in table[key].items()}
    assert shown == quoted, key
  sections = {section for section, _ in markdown}
  assert sections == {'paper_protocol', 'table3', 'missing_landmarks',
                      'hard_variant', 'manta', 'pretrained_start',
                      'landmark_predictor', 'nyala', 'serving', 'speed'}


def test_the_csv_is_written_from_the_markdown(tmp_path):
  with open(CSV, encoding='utf-8') as f:
    assert f.read() == results_csv.render(markdown_rows())
  assert results_csv.main(['--check']) == 0
  assert results_csv.main(['--chek']) == 1
  bad = tmp_path / 'RESULTS.md'
  bad.write_text('## Speed (`speed`)\n\n| row | img/s | config | command | '
                 'date | CPU |\n| --- | ---: | --- | --- | --- | --- |\n'
                 '| a | 1.0 | c | python -m x | 2026-12-07 |\n')
  with pytest.raises(ValueError, match=r'RESULTS.md:5: 5 cells under a '
                     r'header of 6'):
    markdown_rows(str(bad))
  # A table under a heading without a slug belongs to no section; a table
  # in a code block is an example, not a row.
  bad.write_text('## Speed (`speed`)\n\n## Notes\n\n| row | c | config | '
                 'command | date | CPU |\n| a | 1 | c | d | e | f |\n')
  with pytest.raises(ValueError, match='RESULTS.md:6: a table outside'):
    markdown_rows(str(bad))
  bad.write_text('## Speed (`speed`)\n\n```\n| a | 1 | c | d | e | f |\n'
                 '```\n')
  assert markdown_rows(str(bad)) == {}


def test_every_row_names_an_existing_config_and_a_dated_command():
  for (section, row), cells in csv_rows().items():
    assert os.path.isfile(os.path.join(REPO, cells['config'])), (
        section, row, cells['config'])
    assert re.fullmatch(r'\d{4}-\d{2}-\d{2}', cells['date']), (row, cells)
    assert 'python -m ' in cells['command'] and cells['CPU'], (row, cells)
    if cells['config'].startswith('configs/') and 'lmid_tf.train' in (
        cells['command']):
      # A training row trains its own config.
      assert f'--flagfile={cells["config"]}' in cells['command'], row


def test_records_live_in_the_section_they_answer():
  # configs/README.md: experiments/<question>/ is a RESULTS.md section.
  sections = {section for section, _ in csv_rows()}
  root = os.path.join(REPO, 'configs', 'experiments')
  assert set(os.listdir(root)) <= sections
  used = {cells['config'] for cells in csv_rows().values()}
  for question in os.listdir(root):
    for name in os.listdir(os.path.join(root, question)):
      path = f'configs/experiments/{question}/{name}'
      included = any(
          f'--flagfile={path}' in open(os.path.join(REPO, other)).read()
          for other in _flagfiles())
      assert path in used or included, f'{path}: no RESULTS.md row uses it'


def _flagfiles():
  for folder, _, names in os.walk(os.path.join(REPO, 'configs')):
    for name in names:
      if name.endswith('.flags'):
        yield os.path.relpath(os.path.join(folder, name), REPO)


def test_the_readme_quotes_only_figures_results_holds():
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  with open(RESULTS, encoding='utf-8') as f:
    results = f.read()
  held = set(re.findall(r'\d+\.\d+', results))
  quoted = set(re.findall(r'(?<![\w.])\d+\.\d+(?![\w.])', readme))
  quoted -= {'3.11', '2.21'}        # Python and TensorFlow versions
  assert quoted and quoted <= held, sorted(quoted - held)
  assert 'docs/RESULTS.md' in readme

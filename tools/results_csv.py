"""Writes docs/results.csv from the tables of docs/RESULTS.md.

RESULTS.md is where a figure is written (with its config, command, date and
CPU); results.csv is the same rows for scripts, one line per figure. Keeping
one derived from the other means a new row is written once.

  python -m tools.results_csv          # rewrite docs/results.csv
  python -m tools.results_csv --check  # exit 1 if it is out of date

A section is a `## Title (`slug`)` heading; a table's first column names the
row and its last four are config, command, date and CPU; every other
non-empty cell is one figure (`1,466` is written 1466).
"""

import csv
import io
import os
import re
import sys

from tools import generated

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'docs', 'RESULTS.md')
CSV = os.path.join(REPO, 'docs', 'results.csv')
FIXED = ('config', 'command', 'date', 'CPU')
COLUMNS = ('section', 'row', 'metric', 'value', 'config', 'command', 'date',
           'cpu')


def markdown_rows(path: str = RESULTS) -> dict:
  """{(section slug, row): {column: cell}} of every table in RESULTS.md.

  Raises ValueError naming the line of a malformed table."""
  rows, section, header, fenced = {}, None, None, False
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if line.startswith('```'):
        fenced = not fenced
      if line.startswith('## '):
        # A heading without a (`slug`) ends the section before it.
        heading = re.match(r'## .*\(`(\w+)`\)\s*$', line)
        section, header = heading and heading.group(1), None
        continue
      if fenced or not line.startswith('|'):
        header = None
        continue
      cells = [c.strip() for c in line.strip().strip('|').split('|')]
      where = f'{path}:{number}'
      if header is None:
        header = cells
        if tuple(header[-4:]) != FIXED:
          raise ValueError(f'{where}: a table must end in the columns '
                           f'{", ".join(FIXED)}, not {header[-4:]}')
      elif not set(''.join(cells)) <= set('-: '):
        if not section:
          raise ValueError(f'{where}: a table outside a ## (`slug`) section')
        if len(cells) != len(header):
          raise ValueError(f'{where}: {len(cells)} cells under a header of '
                           f'{len(header)}')
        key = (section, cells[0])
        if key in rows:
          raise ValueError(f'{where}: row {key} given twice')
        rows[key] = dict(zip(header, cells))
  return rows


def render(rows: dict) -> str:
  """The CSV text of `rows` (markdown_rows' result), in their order."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(COLUMNS)
  for (section, row), cells in rows.items():
    fixed = [cells[name].strip('`') for name in FIXED]
    for metric, value in list(cells.items())[1:-len(FIXED)]:
      if value:
        writer.writerow([section, row, metric, value.replace(',', '')]
                        + fixed)
  return out.getvalue()


def main(argv) -> int:
  try:
    text = render(markdown_rows())
  except (OSError, ValueError) as e:
    print(f'results_csv: error: {e}', file=sys.stderr)
    return 1
  return generated.write_or_check(CSV, text, argv, 'results_csv')


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

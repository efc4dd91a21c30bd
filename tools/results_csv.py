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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'docs', 'RESULTS.md')
CSV = os.path.join(REPO, 'docs', 'results.csv')
FIXED = ('config', 'command', 'date', 'CPU')
COLUMNS = ('section', 'row', 'metric', 'value', 'config', 'command', 'date',
           'cpu')


def markdown_rows(path: str = RESULTS) -> dict:
  """{(section slug, row): {column: cell}} of every table in RESULTS.md.

  Raises ValueError naming the line of a malformed table."""
  rows, section, header = {}, None, None
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      heading = re.match(r'## .*\(`(\w+)`\)\s*$', line)
      if heading:
        section, header = heading.group(1), None
        continue
      if not line.startswith('|'):
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
  except ValueError as e:
    print(f'results_csv: error: {e}', file=sys.stderr)
    return 1
  with open(CSV, encoding='utf-8') as f:
    current = f.read()
  if '--check' in argv:
    if current != text:
      print(f'results_csv: {CSV} is out of date: run python -m '
            'tools.results_csv', file=sys.stderr)
      return 1
    return 0
  if current != text:
    with open(CSV + '.tmp', 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(CSV + '.tmp', CSV)
    print(f'results_csv: wrote {CSV}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

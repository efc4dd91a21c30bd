"""The `--check` or rewrite step shared by the tools that write a derived
file (BUILD, docs/results.csv): one way to say it is stale, and one atomic
write (tools import no TensorFlow, so not lmid_tf.files)."""

import os
import sys


def write_or_check(path: str, text: str, argv, tool: str) -> int:
  """Rewrites `path` with `text` if it differs, or with `--check` in argv
  only says whether it is current; returns the exit code (1: stale, or an
  argument it does not know)."""
  unknown = [a for a in argv if a != '--check']
  if unknown:
    print(f'{tool}: error: unknown arguments {unknown}; usage: python -m '
          f'tools.{tool} [--check]', file=sys.stderr)
    return 1
  try:
    with open(path, encoding='utf-8') as f:
      current = f.read()
  except FileNotFoundError:
    current = None
  if '--check' in argv:
    if current != text:
      print(f'{tool}: {path} is out of date: run python -m tools.{tool}',
            file=sys.stderr)
      return 1
    return 0
  if current != text:
    temporary = f'{path}.tmp{os.getpid()}'
    try:
      with open(temporary, 'w', encoding='utf-8') as f:
        f.write(text)
      os.replace(temporary, path)
    finally:
      if os.path.exists(temporary):
        os.remove(temporary)
    print(f'{tool}: wrote {path}')
  return 0

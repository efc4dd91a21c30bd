"""Every `python -m <tool> ...` command in the docs uses flags that tool
defines, and every configs/ file the docs name exists.

Read: README.md, docs/*.md (not docs/journal/: a dated record keeps the
commands of its day), configs/README.md and the example commands in the
flagfiles' comments. A command is a fenced code block's line (with its
backslash continuations) or an inline code span. A tool's flags are the
absl flags its `__main__` block defines: the block is run in this process
with `absl.app.run` stubbed out, so nothing trains; a tool whose third-party
imports are missing here falls back to the DEFINE_* calls in its source.
"""

import ast
import functools
import glob
import importlib.util
import os
import re
import runpy
import shlex
import warnings

from absl import app
from absl import flags
import pytest

from conftest import REPO

DOCS = sorted(glob.glob(os.path.join(REPO, 'docs', '*.md'))) + [
    os.path.join(REPO, 'README.md'), os.path.join(REPO, 'configs', 'README.md')]
FLAGFILES = sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.flags'),
                             recursive=True))
COMMAND = re.compile(r'(?:^|[\s(/])python3? -m ((?:\w+\.)*\w+)(?=\s|$)(.*)$')
CONFIG = re.compile(r'configs/[\w/.*{},-]+?\.flags')
ENDS = {'&&', '||', '|', ';', '>', '2>&1'}


def _logical_lines(text: str):
  """(line number, text) of each command-bearing line of a markdown file."""
  in_block, pending, start = False, '', 0
  prose = []
  for number, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith('```'):
      in_block = not in_block
      continue
    if in_block:
      if not pending:
        start = number
      pending += line.rstrip().rstrip('\\') + ' '
      if not line.rstrip().endswith('\\'):
        yield start, pending
        pending = ''
    else:
      prose.append((number, line))
  # Inline code spans, which may wrap across lines of a paragraph.
  joined = ' '.join(line for _, line in prose)
  numbers = []
  for number, line in prose:
    numbers += [number] * (len(line) + 1)
  for span in re.finditer(r'`([^`]+)`', joined):
    yield numbers[min(span.start(), len(numbers) - 1)], span.group(1)


def _commands(path: str):
  """(where, module, [flag names], [tokens]) of each command in `path`."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  if path.endswith('.flags'):
    text = '```\n' + '\n'.join(
        line.lstrip('#') for line in text.splitlines()
        if line.startswith('#')) + '\n```'
  for number, line in _logical_lines(text):
    for found in COMMAND.finditer(line.replace('\\|', '|')):
      module, rest = found.group(1), found.group(2)
      try:
        tokens = shlex.split(rest, comments=True)
      except ValueError:     # an unbalanced quote in prose: split plainly
        tokens = rest.split()
      for i, token in enumerate(tokens):
        if token in ENDS or token.endswith(';'):
          tokens = tokens[:i]
          break
      names = [t.lstrip('[').split('=')[0][2:].rstrip('])`,')
               for t in tokens if t.lstrip('[').startswith('--')]
      where = f'{os.path.relpath(path, REPO)}:{number}'
      yield where, module, names, tokens


def _all_commands():
  found = []
  for path in DOCS + FLAGFILES:
    found += list(_commands(path))
  return found


class _Stop(Exception):
  pass


def _source_flags(path: str, function: str = None) -> set:
  """Flag names of the DEFINE_* calls with a literal name in a source file
  (in one of its functions, if named), following calls to the define_*
  functions of the first-party modules it imports."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  imported = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        imported[alias.asname or alias.name] = f'{node.module}.{alias.name}'
  if function:
    tree = next(node for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef) and node.name == function)
  names = set()
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
      continue
    attr, owner = node.func.attr, node.func.value
    if attr.startswith('DEFINE') and node.args and isinstance(
        node.args[0], ast.Constant):
      names.add(node.args[0].value)
    elif attr.startswith('define') and isinstance(owner, ast.Name) and (
        owner.id in imported):
      if imported[owner.id] == 'lmid_tf.config':
        names |= _settings_flags()    # one flag per Settings field
      else:
        spec = importlib.util.find_spec(imported[owner.id])
        names |= _source_flags(spec.origin, attr)
  return names


def _settings_flags() -> set:
  import dataclasses
  from lmid_tf import config
  return {f.name for f in dataclasses.fields(config.Settings)}


@functools.lru_cache(maxsize=None)
def tool_flags(module: str):
  """The flags `python -m module` accepts, or None for a third-party tool
  (pytest, pip); raises AssertionError for a module that does not exist."""
  spec = importlib.util.find_spec(module)
  assert spec is not None, f'no module {module}'
  if not (spec.origin or '').startswith(REPO):
    return None
  with open(spec.origin, encoding='utf-8') as f:
    source = f.read()
  if 'app.run(' not in source and 'cli.run(' not in source:
    return None                       # not an absl command line
  before = set(flags.FLAGS)
  real_run = app.run

  def stop(*args, **kwargs):
    raise _Stop()

  app.run = stop
  try:
    with warnings.catch_warnings():    # runpy: the module is imported already
      warnings.simplefilter('ignore', RuntimeWarning)
      runpy.run_module(module, run_name='__main__', alter_sys=False)
  except _Stop:
    pass
  except ImportError:               # e.g. torch for benchmarks.peer_pytorch
    defined = _source_flags(spec.origin)
  finally:
    app.run = real_run
  if 'defined' not in locals():
    defined = set(flags.FLAGS) - before
  for name in set(flags.FLAGS) - before:   # leave FLAGS as it was
    delattr(flags.FLAGS, name)
  return frozenset(defined | before)


def _accepts(known, name: str) -> bool:
  if name in known or name in ('help', 'helpfull', 'helpshort', 'flagfile'):
    return True
  return name.startswith('no') and name[2:] in known   # --noalign


def test_the_docs_have_commands():
  modules = {module for _, module, _, _ in _all_commands()}
  assert {'lmid_tf.train', 'lmid_tf.identify', 'serving.export',
          'data_tools.convert', 'tools.demo'} <= modules


def test_every_documented_flag_is_defined_by_its_tool():
  wrong = []
  for where, module, names, _ in _all_commands():
    known = tool_flags(module)
    if known is None:
      continue
    wrong += [f'{where}: python -m {module} has no --{name}'
              for name in names if not _accepts(known, name)]
  assert not wrong, '\n'.join(wrong)


def test_every_referenced_config_exists():
  missing = []
  for path in DOCS + FLAGFILES:
    with open(path, encoding='utf-8') as f:
      text = f.read()
    for number, line in enumerate(text.splitlines(), 1):
      for name in CONFIG.findall(line):
        braces = re.match(r'(.*)\{(.*)\}(.*)', name)
        names = ([braces.group(1) + part + braces.group(3)
                  for part in braces.group(2).split(',')]
                 if braces else [name])
        for one in names:
          if not glob.glob(os.path.join(REPO, one)):
            missing.append(f'{os.path.relpath(path, REPO)}:{number}: {one}')
  assert not missing, '\n'.join(missing)


@pytest.mark.parametrize('line,module,names', [
    ('sh setup.sh && .venv/bin/python -m tools.demo --out=runs/demo',
     'tools.demo', ['out']),
    ('python -m serving.client --image=p.jpg --landmarks="x,y;x,y;;x,y" '
     '# comment --not_a_flag', 'serving.client', ['image', 'landmarks']),
    ('`python -m data_tools.make_synthetic --out=d [--variant=hard\\|body]`',
     'data_tools.make_synthetic', ['out', 'variant']),
])
def test_commands_are_read_as_written(line, module, names, tmp_path):
  doc = tmp_path / 'doc.md'
  doc.write_text(f'```sh\n{line}\n```\n' if not line.startswith('`')
                 else f'Text {line} more.\n')
  (found,) = [(m, n) for _, m, n, _ in _commands(str(doc))]
  assert found == (module, names)


def test_every_relative_link_leads_to_a_file():
  broken = []
  for path in DOCS:
    with open(path, encoding='utf-8') as f:
      text = f.read()
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text):
      if '://' in target:
        continue
      if not os.path.exists(os.path.join(os.path.dirname(path), target)):
        broken.append(f'{os.path.relpath(path, REPO)}: {target}')
  assert not broken, '\n'.join(broken)

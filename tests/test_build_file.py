"""BUILD and the import graph (Bazel cannot run here to check them).

BUILD is Starlark, which Python's `ast` reads. Every module and test must be
in a target, each target's deps must be exactly what its files import, and
the imports must run one way: tools (data_tools, serving, benchmarks, tools,
tests) import the library lmid_tf, never the reverse, with no cycle, also
counting imports inside functions.
"""

import ast
import glob
import os

from conftest import REPO
from tools import build_file

LIBRARY = build_file.LIBRARY


def _targets():
  """[{rule, name, srcs, deps}] from BUILD."""
  with open(os.path.join(REPO, 'BUILD')) as f:
    tree = ast.parse(f.read(), 'BUILD')
  targets = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      kwargs = {k.arg: k.value for k in node.keywords}
      if 'srcs' not in kwargs:
        continue
      strings = lambda key: [e.value for e in kwargs[key].elts] if (
          key in kwargs) else []
      targets.append({
          'rule': node.func.id, 'name': kwargs['name'].value,
          'srcs': strings('srcs'),
          'deps': [d.split(':')[-1] for d in strings('deps')]})
  return targets


_python_files = lambda: set(build_file.python_files())
imports = build_file.imports


def test_every_module_is_in_a_target():
  covered = {src for t in _targets() for src in t['srcs']}
  assert sorted(_python_files() - covered) == []


def test_every_test_file_is_a_py_test():
  tests = {os.path.relpath(p, REPO)
           for p in glob.glob(os.path.join(REPO, 'tests', 'test_*.py'))}
  py_tests = {src for t in _targets() if t['rule'] == 'py_test'
              for src in t['srcs']}
  assert sorted(tests - py_tests) == []
  assert sorted(py_tests - tests) == [], 'py_test for a missing file'


def test_every_cli_is_a_py_binary():
  binaries = {src for t in _targets() if t['rule'] == 'py_binary'
              for src in t['srcs']}
  for path in _python_files():
    if not path.startswith('tests/') and build_file.is_binary(path):
      assert path in binaries, path


def test_deps_are_exactly_the_imports():
  targets = _targets()
  names = [t['name'] for t in targets]
  assert len(names) == len(set(names)), 'target names are unique'
  owner = {}
  for t in targets:
    if t['rule'] == 'py_library':
      for src in t['srcs']:
        assert src not in owner, f'{src} is in two libraries'
        owner[src] = t['name']
  problems = []
  for t in targets:
    if t['rule'] == 'py_binary':
      # A binary is its library plus a main: it depends on that library.
      libraries = {owner.get(src) for src in t['srcs']}
      if set(t['deps']) != libraries:
        problems.append(f'{t["name"]}: deps {t["deps"]}, expected '
                        f'{sorted(libraries)}')
      continue
    needed = set()
    for src in t['srcs']:
      for imported in imports(src):
        if owner.get(imported) is None:
          problems.append(f'{t["name"]}: {imported} is in no py_library')
        elif owner[imported] != t['name']:
          needed.add(owner[imported])
    if set(t['deps']) != needed:
      problems.append(f'{t["name"]}: missing {sorted(needed - set(t["deps"]))}'
                      f', unused {sorted(set(t["deps"]) - needed)}')
  assert problems == []


def test_imports_run_one_way_without_cycles():
  graph = {path: imports(path) for path in _python_files()}
  upward = [(path, imported) for path, found in graph.items()
            if path.startswith(LIBRARY + '/')
            for imported in found if not imported.startswith(LIBRARY + '/')]
  assert upward == [], 'the library imports a tool'
  # Depth-first search for a cycle.
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        raise AssertionError('import cycle: ' + ' -> '.join(
            stack[stack.index(nxt):] + [nxt]))
      if nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_the_import_scanner_sees_function_level_imports(tmp_path):
  assert 'lmid_tf/config.py' in imports('lmid_tf/train.py')
  assert 'lmid_tf/data/annotations.py' in imports('data_tools/convert.py')
  assert 'tests/conftest.py' in imports('tests/test_train.py')
  # test_evaluate imports benchmarks.heatmap_ablation inside a function.
  assert 'benchmarks/heatmap_ablation.py' in imports('tests/test_evaluate.py')


def test_build_is_what_the_generator_writes():
  with open(os.path.join(REPO, 'BUILD')) as f:
    assert f.read() == build_file.render(), 'run python -m tools.build_file'

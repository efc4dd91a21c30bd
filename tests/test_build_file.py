"""BUILD must name every module and test (Bazel cannot run here to check)."""

import ast
import glob
import os

from conftest import REPO

PACKAGES = ('lmid_tf', 'data_tools', 'serving', 'benchmarks')


def _targets():
  """[(rule, name, srcs)] from BUILD, parsed as the Python it syntactically is."""
  with open(os.path.join(REPO, 'BUILD')) as f:
    tree = ast.parse(f.read(), 'BUILD')
  targets = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ListComp):
      # [py_test(name = name, srcs = ["tests/%s.py" % name]) for name in [...]]
      call = node.elt
      names = [e.value for e in node.generators[0].iter.elts]
      for name in names:
        targets.append((call.func.id, name, [f'tests/{name}.py']))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      kwargs = {k.arg: k.value for k in node.keywords}
      if 'srcs' in kwargs and isinstance(kwargs['srcs'], ast.List) and all(
          isinstance(e, ast.Constant) for e in kwargs['srcs'].elts):
        targets.append((node.func.id, kwargs['name'].value,
                        [e.value for e in kwargs['srcs'].elts]))
  return targets


def test_every_module_is_in_a_target():
  covered = {src for _, _, srcs in _targets() for src in srcs}
  modules = {os.path.relpath(p, REPO) for pkg in PACKAGES
             for p in glob.glob(os.path.join(REPO, pkg, '*.py'))}
  assert modules, 'no modules found'
  assert sorted(modules - covered) == []


def test_every_test_file_is_a_py_test():
  tests = {os.path.relpath(p, REPO)
           for p in glob.glob(os.path.join(REPO, 'tests', 'test_*.py'))}
  py_tests = {src for rule, _, srcs in _targets() if rule == 'py_test'
              for src in srcs}
  assert sorted(tests - py_tests) == []
  assert sorted(py_tests - tests) == [], 'py_test for a missing file'


def test_every_cli_is_a_py_binary():
  binaries = {src for rule, _, srcs in _targets() if rule == 'py_binary'
              for src in srcs}
  for pkg in PACKAGES:
    for path in glob.glob(os.path.join(REPO, pkg, '*.py')):
      with open(path) as f:
        if "if __name__ == '__main__':" in f.read():
          assert os.path.relpath(path, REPO) in binaries, path


def test_target_names_are_unique_and_deps_resolve():
  names = [name for _, name, _ in _targets()]
  assert len(names) == len(set(names))
  with open(os.path.join(REPO, 'BUILD')) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == 'deps':
      for dep in node.value.elts:
        label = dep.value.split(':')[-1]
        assert label in names, f'unknown dep {dep.value}'

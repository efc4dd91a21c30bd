"""Writes BUILD from the import graph, as Gazelle would (Bazel cannot run here).

Every first-party Python file gets a target: a `py_library` named after the
module, a `py_binary` beside it for a command line (a file with a
`__main__` block; its library is then `<name>_lib`), a `py_test` for each
test. A target's deps are exactly the first-party files it imports, anywhere
in it (function-level imports too). tests/test_build_file.py checks the
result independently.

  python -m tools.build_file          # rewrite BUILD
  python -m tools.build_file --check  # exit 1 if BUILD is out of date
"""

import ast
import collections
import glob
import os
import sys

from tools import generated

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = 'lmid_tf'
TEST_DATA = 'data = ["BUILD"] + glob(["configs/**/*.flags"]),'
HEADER = '''\
# Bazel targets for lmid-tf, written by `python -m tools.build_file` from the
# import graph (Bazel cannot fetch rules offline here, so
# tests/test_build_file.py keeps this file honest: every module and test is in
# a target, and each target's deps are exactly the first-party modules its
# files import). Third-party packages come from requirements.txt (rules_python
# pip_parse in a WORKSPACE/MODULE.bazel of the user's choice).

package(default_visibility = ["//visibility:public"])
'''


def packages() -> tuple:
  """First-party top-level packages: the library first, then the tools."""
  found = sorted(d for d in os.listdir(REPO) if d not in ('tests', LIBRARY)
                 and os.path.isfile(os.path.join(REPO, d, '__init__.py')))
  return (LIBRARY,) + tuple(found)


def python_files() -> list:
  """Every first-party .py file (packages recursively, and tests/)."""
  files = set()
  for pkg in packages():
    files.update(glob.glob(os.path.join(REPO, pkg, '**', '*.py'),
                           recursive=True))
  files.update(glob.glob(os.path.join(REPO, 'tests', '*.py')))
  return sorted(os.path.relpath(p, REPO) for p in files)


def module_file(name: str):
  """'lmid_tf.config' -> 'lmid_tf/config.py' (or the package __init__)."""
  path = name.replace('.', '/')
  for candidate in (path + '.py', path + '/__init__.py'):
    if os.path.exists(os.path.join(REPO, candidate)):
      return candidate
  return None


def imports(path: str) -> set:
  """First-party files that `path` imports, anywhere in it."""
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read(), path)
  roots = packages() + ('tests',)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      candidates = [module_file(a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      module = 'tests.conftest' if node.module == 'conftest' else node.module
      # `from pkg import module` imports that module; `from pkg.mod import
      # name` imports pkg/mod.py.
      candidates = [module_file(f'{module}.{a.name}') or module_file(module)
                    for a in node.names]
    else:
      continue
    found.update(c for c in candidates if c and c.split('/')[0] in roots)
  found.discard(path)
  return found


def is_binary(path: str) -> bool:
  with open(os.path.join(REPO, path)) as f:
    return "if __name__ == '__main__':" in f.read()


def _base_names(files: list) -> dict:
  """path -> target base name, unique: the module name, or parent_module."""
  def base(path):
    parts = path[:-3].split('/')
    if parts[-1] == '__init__':
      return '_'.join(parts[:-1]) + '_package'
    if path == 'tests/conftest.py':
      return 'test_support'
    if parts[0] == 'benchmarks':
      return 'benchmark_' + parts[-1]
    return parts[-1]
  names = {p: base(p) for p in files}
  counts = collections.Counter(names.values())
  return {p: (n if counts[n] == 1 else
              p[:-3].split('/')[-2] + '_' + n) for p, n in names.items()}


def library_names(files: list) -> dict:
  """path -> the py_library (or py_test) that owns it."""
  bases = _base_names(files)
  return {p: bases[p] + ('_lib' if not p.startswith('tests/') and is_binary(p)
                         else '') for p in files}


def _rule(kind: str, name: str, src: str, deps=(), extra: str = '') -> str:
  lines = [f'{kind}(', f'    name = "{name}",', f'    srcs = ["{src}"],']
  if extra:
    lines.append(f'    {extra}')
  if deps:
    lines.append('    deps = [' + ', '.join(f'":{d}"' for d in sorted(deps))
                 + '],')
  return '\n'.join(lines + [')'])


def render() -> str:
  files = python_files()
  owner = library_names(files)
  bases = _base_names(files)
  sections = collections.OrderedDict()
  for path in files:
    section = path.split('/')[0]
    deps = {owner[i] for i in imports(path) if i in owner}
    if path.startswith('tests/test_'):
      block = _rule('py_test', owner[path], path, deps, TEST_DATA)
    else:
      block = _rule('py_library', owner[path], path, deps)
      if is_binary(path):
        block += '\n\n' + _rule('py_binary', bases[path], path, [owner[path]],
                                f'main = "{path}",')
    sections.setdefault(section, []).append(block)
  out = [HEADER]
  for section, blocks in sections.items():
    title = f'# ---- {section} '
    out.append(title + '-' * (79 - len(title)) + '\n')
    out.extend(b + '\n' for b in blocks)
  return '\n'.join(out)


def main(argv) -> int:
  return generated.write_or_check(os.path.join(REPO, 'BUILD'), render(), argv,
                                  'build_file')


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

#!/bin/sh
# Creates (or reuses) .venv and installs requirements.txt into it.
# Re-installs only when requirements.txt changed since the last successful run.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: installing requirements into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  grep -v '^tensorflow-serving-api' requirements.txt > .venv/requirements-deps.txt
  .venv/bin/python -m pip install -q -r .venv/requirements-deps.txt
  # See requirements.txt: its declared `tensorflow` dependency is already
  # satisfied by tensorflow-cpu.
  .venv/bin/python -m pip install -q --no-deps $(grep '^tensorflow-serving-api' requirements.txt)
  echo "$want" > "$stamp"
fi

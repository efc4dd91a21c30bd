"""lmid-tf: Landmark-Id individual re-identification (docs/ARCHITECTURE.md).

Importing the package imports TensorFlow with its C++ start-up lines
(oneDNN, cpu_feature_guard, absl) silenced, so that every tool prints only
its own output; `--verbosity=N` (or `-v N`) on the command line, or
LMID_TF_LOGS=1, keeps them. TensorFlow >= 2.20 logs through absl before its
logging is initialised, which TF_CPP_MIN_LOG_LEVEL no longer reaches, so the
only reliable switch is the stderr file descriptor during the import.

It also turns on TensorFlow's oneDNN kernels on every x86 CPU. TensorFlow
does so itself only with AVX-512 VNNI, bf16 or AMX; on an AVX2-only CPU they
made the ResNet50 training step 1.8x and the small CNN's 1.6x faster (docs/
RESULTS.md, "Speed"). Their one wrong kernel found, a strided 1x1
convolution's filter gradient, is replaced in training
(lmid_tf/speed/conv_gradients.py, `correct`). TF_ENABLE_ONEDNN_OPTS=0
keeps them off.
"""

import os as _os
import platform as _platform
import sys as _sys


def logs_wanted() -> bool:
  """True when the user asked for library logs (--verbosity, -v, LMID_TF_LOGS)."""
  if _os.environ.get('LMID_TF_LOGS'):
    return True
  return any(arg.startswith(('--verbosity', '--v=')) or arg in ('-v', '--v')
             for arg in _sys.argv[1:])


def _import_tensorflow_quietly() -> None:
  if 'tensorflow' in _sys.modules or logs_wanted():
    return
  _os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  saved = _os.dup(2)
  null = _os.open(_os.devnull, _os.O_WRONLY)
  _os.dup2(null, 2)
  try:
    import tensorflow  # noqa: F401
  finally:
    _os.dup2(saved, 2)
    _os.close(saved)
    _os.close(null)


def _onednn_on_every_x86_cpu() -> None:
  # TensorFlow reads the variable once, when it is imported.
  if _platform.machine().lower() in ('x86_64', 'amd64'):
    _os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


_onednn_on_every_x86_cpu()
_import_tensorflow_quietly()

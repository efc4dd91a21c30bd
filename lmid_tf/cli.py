"""What every lmid-tf command-line tool shares: quiet logs and clear errors.

  define_flags()               # in the tool's __main__ block
  cli.run(main, 'evaluate')

A user error (bad flag value, missing or malformed file, bad data) ends the
tool with `<tool>: error: <message>` on stderr and exit status 1 instead of a
traceback. Python-level TensorFlow and Keras warnings are hidden unless
--verbosity asks for them (the C++ ones are handled by lmid_tf/__init__.py).
"""

import re
import sys
import warnings

from absl import app
from absl import logging
import tensorflow as tf

import lmid_tf

# Exceptions that mean "the input is wrong", not "the program is wrong".
USER_ERRORS = (ValueError, FileNotFoundError, OSError,
               tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
               tf.errors.DataLossError)


def error_message(error: BaseException) -> str:
  """The user-facing part of an error.

  TensorFlow's op errors wrap the message in the graph node, the function
  name and a trace, which say nothing to a user; an in-graph assertion
  (e.g. preprocess.check_encoded) keeps only its own text.
  """
  message = getattr(error, 'message', None) or str(error)
  message = message.split('\n\t [[', 1)[0]
  message = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', message)
  asserted = (re.search(r'assertion failed: \[(.*)\]$', message, re.S)
              or re.search(r"Summarized data: b'(.*)'$", message, re.S))
  return (asserted.group(1) if asserted else message).strip()


def quiet_python_logs() -> None:
  """Hides TensorFlow's Python log lines and library warnings (e.g. Keras on
  the 3 + k input channels that are the point of Landmark-Id)."""
  if lmid_tf.logs_wanted():
    return
  tf.get_logger().setLevel('ERROR')
  # SavedModel saving logs INFO lines through absl directly.
  logging.set_verbosity(logging.WARNING)
  warnings.filterwarnings('ignore', category=UserWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)


def run(main, name: str, errors: tuple = ()) -> None:
  """absl's app.run, with user errors turned into one line and exit 1."""

  def wrapped(argv):
    quiet_python_logs()
    try:
      return main(argv)
    except USER_ERRORS + tuple(errors) as e:
      sys.exit(f'{name}: error: {error_message(e)}')

  app.run(wrapped)

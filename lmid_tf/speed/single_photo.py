r"""Single-photo calls through a frozen copy of the function: the latency of
one query (the review desk's upload, `identify query`, a one-image serving
request).

At batch 1 a ResNet50 embedding is 3 GFLOP, a few milliseconds of
arithmetic, yet a call took 37 ms (p50, bf16, 128 px, 2 AMX cores): with
the weights in variables, every call casts them (in a bf16 export) and
oneDNN reorders each filter into its blocked layout again. With the
variables frozen into constants (`convert_variables_to_constants_v2`),
Grappler folds the casts once and oneDNN keeps the reordered filters
between calls: the same graph, 15.2 ms (`benchmarks/peer_pytorch.py`,
docs/RESULTS.md "Speed"). At batch 32 a probe measured the frozen copy
slower than the variable one, so only small batches take it.
"""

import threading

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

# Batches up to this size take the frozen copy (a probe: faster at 1 and 4,
# slower at 32).
SMALL_BATCH = 4


def freeze(function: tf.types.experimental.ConcreteFunction):
  """A callable with `function`'s arguments and outputs (a structure of
  tensors) that computes it with its variables as constants."""
  frozen = convert_to_constants.convert_variables_to_constants_v2(function)
  args, kwargs = function.structured_input_signature
  outputs = function.structured_outputs

  def call(*call_args, **call_kwargs):
    flat = tf.nest.flatten((call_args, call_kwargs))
    if len(flat) != len(tf.nest.flatten((args, kwargs))):
      raise TypeError(f'{function.name}: takes {args} {kwargs}, got '
                      f'{call_args} {sorted(call_kwargs)}')
    return tf.nest.pack_sequence_as(outputs, frozen(*flat),
                                    expand_composites=True)
  return call


class SmallBatchFunction:
  """`function` (a ConcreteFunction, e.g. a loaded SavedModel signature),
  with batches of up to SMALL_BATCH photos computed by its frozen copy,
  made at the first such call (a server's warm-up request makes it before
  the first real one). Safe to call from several threads.

  Freezing reads the variables, so whatever holds them (the loaded
  SavedModel) must stay alive: pass it as `owner` where nothing else keeps
  it.
  """

  def __init__(self, function, owner=None):
    self.function = function
    self._owner = owner
    self._frozen = None
    self._lock = threading.Lock()

  def __call__(self, **inputs):
    first = next(iter(inputs.values()))
    batch = first.shape[0]
    if batch is None or batch > SMALL_BATCH:
      return self.function(**inputs)
    if self._frozen is None:
      with self._lock:
        if self._frozen is None:
          self._frozen = freeze(self.function)
    return self._frozen(**inputs)

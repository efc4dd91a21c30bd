"""What `--deterministic` switches on: the same bits from the same command.

`tf.config.experimental.enable_op_determinism()` makes every kernel
deterministic (or raise), but not what Grappler does to the graph before
the kernels run. Its memory optimizer rewrites a gradient sum (AddN with
more than two inputs) into a temporary variable that each input is
AssignAdd-ed to *as it arrives*, when its static estimate of the graph's
peak memory is above 80 % of the device's memory (memory_optimizer.cc,
SchedulingPass). The float sum then follows thread
timing, which varies from process to process. In stage 2 of Landmark-Id
the embedding's gradient is such a sum (ID, triplet, center and heatmap
losses), so two runs of the demo recipe drifted apart from the first
stage-2b step (issue 24; each loss's gradient alone was bit-equal). The
optimizer has no public switch, so `enable` turns it off through the eager
context's ConfigProto; the default path keeps it.
"""

import keras
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.eager import context


def enable(seed: int) -> None:
  """Seeds every generator, makes kernels deterministic and stops the graph
  rewrite whose sums follow thread timing. Call before the first step is
  traced."""
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  _disable_memory_optimizer()


def _disable_memory_optimizer() -> None:
  ctx = context.context()
  proto = config_pb2.ConfigProto()
  if ctx._config is not None:  # pylint: disable=protected-access
    proto.CopyFrom(ctx._config)  # pylint: disable=protected-access
  proto.graph_options.rewrite_options.memory_optimization = (
      rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)
  ctx._config = proto  # pylint: disable=protected-access
  # Functions read the config when their call options are (re)built;
  # a public option change resets them, as it would after any option.
  tf.config.optimizer.set_experimental_options({})


def memory_optimizer_disabled() -> bool:
  """Whether the config that functions are compiled with turns it off."""
  return (context.context().config.graph_options.rewrite_options
          .memory_optimization == rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)

r"""Convolution gradients as matrix products, where oneDNN's own are slow
(--conv_gradients).

A convolution's filter gradient is one matrix product,

  dW[kh·kw·C, K] = patches(x)[N, kh·kw·C]^T · dy[N, K],   N = B·H_out·W_out,

the same arithmetic as the forward pass. On an Intel CPU with AMX, TF's
oneDNN filter-gradient kernel computed it at 80-160 GFLOP/s on ResNet50's
conv5 layers at 128 px (N = 512, C·K up to 2M), where the same product
through `tf.linalg.matmul` ran at 140-780 GFLOP/s; over the whole network
the filter gradients of one step took 337 ms natively and 158 ms as this
module chooses (`python -m benchmarks.conv_gradients`, docs/journal/
2026-12-02-amx-speed.md). A 1×1 convolution at stride 1 is a matrix
product in all three directions (forward, input and filter gradient), and
is computed as one. Where the native kernel measured faster (3×3 filters
on larger maps, whose patches would be 9× the input; the 7×7 stem), it is
kept.

`use(net)` swaps the Conv2D layers of a network in place for
`MatmulConv2D`, which has the same variables, config and results (within
bf16 rounding: each product accumulates in float32 and rounds its output
once, as oneDNN's does); `restore(net)` swaps them back before saving, so
saved models hold plain Keras layers.

`use` also drops the bias of every convolution that feeds a batch norm
(Keras' ResNet50 has one before each): a training-mode batch norm
subtracts the batch mean, so the bias changes neither its output nor any
gradient but its own, and computing it made oneDNN take its slower
filter-gradient-with-bias kernel. The bias is moved into the batch norm's
moving mean first (mean - bias, bias = 0), which keeps inference the same
function, so ImageNet weights load and trained weights save as before.

Chosen by the CPU (`mode_for_this_machine`): 'auto' is 'matmul' when
training in bfloat16 on a CPU with bf16 instructions (AMX, or AVX-512 bf16
as on AMD Zen 4), where it was measured faster, and 'native' elsewhere. On
a Zen 4 CPU (avx512_bf16, no AMX) the filter gradients of one ResNet50
step took 416 ms natively and 344 ms as this module chooses, and the whole
training step ran 4-7 % faster in three interleaved runs and at 48.4
against 41.1 img/s in one benchmark run (docs/journal/
2026-12-07-zen4-speed.md). The choice below (PATCHES_MAX_POSITIONS,
measured on AMX) came within 5 % of the per-layer best there, and within
1 % on a Zen 5 CPU with the strided 1×1 filters as they are now.

A 1×1 convolution at a stride above 1 reads every s-th row and column of
its input: it is that subsampled map's 1×1 convolution at stride 1, and is
computed so, forward and backward (`subsample`). TensorFlow 2.21's
`StridedSlice` with a step above 1 on a [B, H, W, C] map ran 11-41× slower
than the same selection as a reshape and a slice (8.56 against 0.21 ms for
a 32×32×32×256 bf16 map on an AMD Zen 5 CPU), and it was what the strided
filter gradients' patches took. ResNet50's six such layers (the first
block of conv3-5, both branches), forward and both gradients timed alone
at 128 px, batch 32: 34.0 ms with TensorFlow's kernels, 21.4 ms so
(`python -m benchmarks.conv_gradients`); the whole training step ran 3.1 %
faster than with TensorFlow's strided kernels (`benchmarks/paired_steps.py`,
setting token `stridedkernels`; docs/journal/2026-12-08-zen5-speed.md).

Whatever the mode, a convolution whose oneDNN filter gradient is wrong is
corrected (`correct(net)`). With TensorFlow 2.21's oneDNN kernels on (which
lmid_tf/__init__.py turns on for every x86 CPU, where TensorFlow itself
does so only with AVX-512 VNNI, bf16 or AMX), the filter gradient of a 1×1
convolution at stride 2 on an even-sized map came out wrong by whole units
on an AVX2-only CPU, though not every time (`python -m
benchmarks.onednn_gradients`: 4 of 48 cases; every other kernel size,
stride and side right to 1e-5, and these right on the AMX and Zen 4 CPUs).
ResNet50 has six such layers (the first block of conv3-5, both branches);
they take this module's matrix-product filter gradient, checked against a
float64 reference, and keep the native forward pass and input gradient.
"""

import keras
import tensorflow as tf

from lmid_tf.modeling import model
from lmid_tf.speed import fold_batch_norm
from lmid_tf.speed import precision

MODES = ('auto', 'native', 'matmul')
# Where the matrix-product filter gradient measured faster than oneDNN's
# (benchmarks/conv_gradients.py): every 1×1 filter (on AMX at stride 1; on
# Zen 5 at stride 2 too, since it reads the subsampled input), and larger
# filters (whose patches cost kh·kw times the input's memory) up to this
# many output positions (N), on AMX.
PATCHES_MAX_POSITIONS = 2048


def mode_for_this_machine(mode: str, dtype_policy: str, flags=None) -> str:
  """'native' or 'matmul' for --conv_gradients=`mode` on this CPU."""
  if mode not in MODES:
    raise ValueError(f'--conv_gradients={mode}: one of {", ".join(MODES)}')
  if mode != 'auto':
    return mode
  flags = precision.cpu_flags() if flags is None else flags
  native_bf16 = bool(set(flags) & set(precision.BF16_CPU_FLAGS))
  return ('matmul' if native_bf16 and dtype_policy == 'mixed_bfloat16'
          else 'native')


def _pointwise(x, matrix, transpose=False):
  """A 1×1 convolution at stride 1 by `matrix` [C_in, C_out] (transposed
  first if `transpose`, for the input gradient)."""
  # Channel counts from the matrix: with an unknown batch, a -1 here would
  # leave the output's channels unknown to the gradient's reshape.
  inputs, outputs = matrix.shape[::-1] if transpose else matrix.shape
  y = tf.linalg.matmul(tf.reshape(x, [-1, inputs]), matrix,
                       transpose_b=transpose)
  return tf.reshape(y, tf.concat([tf.shape(x)[:3], [outputs]], 0))


def matmul_filter_gradient(kernel_shape, strides: int, positions: int) -> bool:
  """Whether a convolution's filter gradient is computed as a matrix
  product: where it measured faster, by the size N = B·H_out·W_out of its
  reduction (module docstring)."""
  if kernel_shape[0] == kernel_shape[1] == 1:
    # At any stride (a strided one reads the subsampled input): its
    # "patches" are the input itself.
    return True
  return positions <= PATCHES_MAX_POSITIONS


def wrong_under_onednn(kernel_shape, strides: int) -> bool:
  """Whether oneDNN's filter gradient of this convolution is not trusted: a
  1×1 filter at a stride above 1 (module docstring; wrong on even-sized
  maps, which covers every ResNet input size, so all sides are taken)."""
  return kernel_shape[0] == kernel_shape[1] == 1 and strides > 1


def onednn_enabled() -> bool:
  """Whether this TensorFlow runs its oneDNN kernels; it decides once, when
  it is imported, from the CPU and TF_ENABLE_ONEDNN_OPTS."""
  try:
    from tensorflow.python.util import _pywrap_util_port
  except ImportError:   # a private module; if it moves, correct anyway
    return True
  return bool(_pywrap_util_port.IsMklEnabled())


# Where TensorFlow turns oneDNN on by itself; there (Intel with AMX, AMD
# Zen 4) the strided 1×1 filter gradients measured right.
ONEDNN_DEFAULT_CPU_FLAGS = ('avx512_vnni', 'avx512_bf16', 'amx_bf16')


def needs_correction(flags=None) -> bool:
  """Whether this process's oneDNN filter gradients need `correct`: oneDNN
  is on, and on a CPU where TensorFlow would not have turned it on itself
  (AVX2 only), where they measured wrong."""
  flags = precision.cpu_flags() if flags is None else flags
  return onednn_enabled() and not set(flags) & set(ONEDNN_DEFAULT_CPU_FLAGS)


def _padding(size: int, kernel: int, strides: int, padding: str) -> tuple:
  """TF's (before, after) padding of one spatial axis."""
  if padding == 'VALID':
    return 0, 0
  out = -(-size // strides)
  total = max((out - 1) * strides + kernel - size, 0)
  return total // 2, total - total // 2


def subsample(x, strides: int):
  """x[:, ::strides, ::strides, :], as a reshape and a slice (module
  docstring: TensorFlow's StridedSlice with a step is many times slower);
  its gradient puts dy back at those positions among zeros the same way
  (TensorFlow's StridedSliceGrad is as slow as the slice)."""
  if strides == 1:
    return x
  rows, cols, channels = x.shape[1], x.shape[2], x.shape[3]
  out_rows, out_cols = -(-rows // strides), -(-cols // strides)
  # A side that is not a multiple of the stride is padded up to one (those
  # rows and columns are never picked).
  padding = [[0, 0], [0, out_rows * strides - rows],
             [0, out_cols * strides - cols], [0, 0]]
  exact = out_rows * strides == rows and out_cols * strides == cols

  @tf.custom_gradient
  def pick(x):
    grid = tf.reshape(x if exact else tf.pad(x, padding),
                      [-1, out_rows, strides, out_cols, strides, channels])

    def gradient(dy):
      spread = tf.pad(
          tf.reshape(dy, [-1, out_rows, 1, out_cols, 1, channels]),
          [[0, 0], [0, 0], [0, strides - 1], [0, 0], [0, strides - 1],
           [0, 0]])
      spread = tf.reshape(spread, [-1, out_rows * strides,
                                   out_cols * strides, channels])
      return spread if exact else spread[:, :rows, :cols, :]

    return grid[:, :, 0, :, 0, :], gradient

  return pick(x)


def _window(x, row: int, col: int, rows: int, cols: int):
  """x[:, row:row + rows, col:col + cols, :] (x itself when that is all
  of it)."""
  if (row, col) == (0, 0) and tuple(x.shape[1:3]) == (rows, cols):
    return x
  return x[:, row:row + rows, col:col + cols, :]


def patches(x, height: int, width: int, strides: int, padding: str):
  """[B, H_out, W_out, height·width·C]: every output position's input patch,
  in the kernel's (row, column, channel) order, as the concatenation of
  height·width shifted, strided views of the padded input (measured faster
  than tf.image.extract_patches in bf16)."""
  rows, cols = x.shape[1], x.shape[2]
  pad_rows = _padding(rows, height, strides, padding)
  pad_cols = _padding(cols, width, strides, padding)
  x = tf.pad(x, [[0, 0], pad_rows, pad_cols, [0, 0]])
  out_rows = (rows + sum(pad_rows) - height) // strides + 1
  out_cols = (cols + sum(pad_cols) - width) // strides + 1
  # Each view subsamples a window of exactly out·s rows and columns; at a
  # stride above 1 the last windows may run up to s - 1 past the padded
  # input: pad once.
  window_rows, window_cols = out_rows * strides, out_cols * strides
  extra_rows = max(height - 1 + window_rows - x.shape[1], 0)
  extra_cols = max(width - 1 + window_cols - x.shape[2], 0)
  if extra_rows or extra_cols:
    x = tf.pad(x, [[0, 0], [0, extra_rows], [0, extra_cols], [0, 0]])
  views = [subsample(_window(x, i, j, window_rows, window_cols), strides)
           for i in range(height) for j in range(width)]
  return views[0] if len(views) == 1 else tf.concat(views, -1)


def filter_gradient(x, dy, kernel_shape, strides: int, padding: str):
  """dL/dW of conv2d(x, W) given dL/dy, as one matrix product over the
  patches of `x` (the im2col of the forward pass)."""
  height, width, channels, filters = kernel_shape
  rows = tf.reshape(patches(x, height, width, strides, padding),
                    [-1, height * width * channels])
  product = tf.linalg.matmul(rows, tf.reshape(dy, [-1, filters]),
                             transpose_a=True)
  return tf.reshape(product, kernel_shape)


def conv2d(x, kernel, strides: int, padding: str, matmul_filter: bool,
           subsample_pointwise: bool = True):
  """tf.nn.conv2d(x, kernel, strides, padding) with its filter gradient as a
  matrix product when `matmul_filter`, and a 1×1 filter as a matrix
  product throughout: at a stride above 1, of the subsampled input, unless
  not `subsample_pointwise` (then TensorFlow's strided kernels compute the
  forward pass and the input gradient, as `correct` keeps them)."""
  if (kernel.shape[0] == kernel.shape[1] == 1 and strides > 1
      and subsample_pointwise):
    # A 1×1 filter has no padding at any stride: output (i, j) reads input
    # (i·s, j·s), for SAME and VALID alike.
    x, strides = subsample(x, strides), 1
  pointwise = kernel.shape[0] == kernel.shape[1] == 1 and strides == 1
  padding = padding.upper()

  @tf.custom_gradient
  def convolve(x, kernel):
    if pointwise:
      y = _pointwise(x, kernel[0, 0])
    else:
      y = tf.nn.conv2d(x, kernel, strides, padding)

    def gradient(dy):
      if pointwise:
        dx = _pointwise(dy, kernel[0, 0], transpose=True)
      else:
        dx = tf.compat.v1.nn.conv2d_backprop_input(
            tf.shape(x), kernel, dy, [1, strides, strides, 1], padding)
      if matmul_filter:
        dk = filter_gradient(x, dy, kernel.shape, strides, padding)
      else:
        dk = tf.compat.v1.nn.conv2d_backprop_filter(
            x, tf.shape(kernel), dy, [1, strides, strides, 1], padding)
      return dx, dk

    return y, gradient

  return convolve(x, kernel)


@keras.saving.register_keras_serializable(package='lmid_tf')
class MatmulConv2D(keras.layers.Conv2D):
  """keras.layers.Conv2D whose gradients are matrix products where they
  measured faster (module docstring); the same variables and config."""

  @property
  def trainable(self):
    return keras.layers.Conv2D.trainable.fget(self)

  @trainable.setter
  def trainable(self, value):
    # Layer.trainable sets every variable's flag; a dropped bias stays out.
    keras.layers.Conv2D.trainable.fset(self, value)
    if getattr(self, '_bias_in_batch_norm', False):
      self.bias.trainable = False

  def convolution_op(self, inputs, kernel):
    if not _convertible(self):
      return super().convolution_op(inputs, kernel)
    strides = self.strides[0]
    height, width = kernel.shape[:2]
    corrected_only = getattr(self, '_corrected_only', False)
    # An unknown batch (a symbolic build) counts as 0 positions.
    positions = (inputs.shape[0] or 0) * (
        -(-inputs.shape[1] // strides)) * (-(-inputs.shape[2] // strides))
    if corrected_only:
      # correct(): the native kernels, except the filter gradient.
      matmul_filter = True
    else:
      # A 1×1 filter at any stride (a strided one reads the subsampled
      # input), whatever the batch; larger ones where measured faster.
      matmul_filter = height == width == 1 or (
          0 < positions and matmul_filter_gradient(kernel.shape, strides,
                                                   positions))
    if not matmul_filter:
      return super().convolution_op(inputs, kernel)
    # A tensor, not the variable, goes into the custom gradient: the
    # variable's gradient flows back through this read (and its cast).
    kernel = keras.ops.cast(kernel, inputs.dtype)
    return conv2d(inputs, kernel, strides, self.padding, matmul_filter,
                  subsample_pointwise=getattr(self, '_subsample_pointwise',
                                              True))


def _convertible(layer) -> bool:
  return (layer.data_format == 'channels_last' and layer.groups == 1
          and tuple(layer.dilation_rate) == (1, 1)
          and layer.strides[0] == layer.strides[1])


def drop_biases_before_batch_norms(net: keras.Model) -> int:
  """Moves the bias of each convolution used only by a batch norm into that
  norm's moving mean and stops computing it (module docstring), in place;
  returns how many. `restore` turns the (zero) biases back on."""
  dropped = 0
  for norm in model.batch_norms(net):
    conv = fold_batch_norm.producer(norm)
    if (not isinstance(conv, keras.layers.Conv2D) or not conv.use_bias
        or len(conv._outbound_nodes) != 1):
      continue
    norm.moving_mean.assign(norm.moving_mean - conv.bias)
    conv.bias.assign(tf.zeros_like(conv.bias))
    conv.use_bias = False
    conv._bias_in_batch_norm = True
    # Not trained either: it would get no gradient (and no optimizer slots).
    conv.bias.trainable = False
    dropped += 1
  return dropped


def use(net: keras.Model, subsample_pointwise: bool = True) -> int:
  """Turns every plain Conv2D of `net` (nested models included) into a
  MatmulConv2D and drops the biases before batch norms, in place; returns
  how many layers were swapped. Call before the first training step is
  traced. With `subsample_pointwise` False, strided 1×1 convolutions keep
  TensorFlow's strided kernels forward and for the input gradient (the
  path before 2026-12-08, for benchmarks/paired_steps.py)."""
  drop_biases_before_batch_norms(net)
  return _swap(net, lambda layer: True, corrected_only=False,
               subsample_pointwise=subsample_pointwise)


def _swap(net: keras.Model, wanted, corrected_only: bool,
          subsample_pointwise: bool = True) -> int:
  """Turns each plain, convertible Conv2D of `net` for which `wanted(layer)`
  into a MatmulConv2D, in place; returns how many. A corrected-only layer
  keeps TensorFlow's strided kernels (conv2d's `subsample_pointwise`)."""
  swapped = 0
  for layer in model.leaf_layers(net):
    if (type(layer) is keras.layers.Conv2D and _convertible(layer)
        and wanted(layer)):
      # Same attributes, one method more: swapping the class is enough.
      layer.__class__ = MatmulConv2D
      layer._corrected_only = corrected_only
      layer._subsample_pointwise = subsample_pointwise and not corrected_only
      swapped += 1
  return swapped


def correct(net: keras.Model) -> int:
  """Gives every plain Conv2D of `net` whose oneDNN filter gradient is wrong
  (`wrong_under_onednn`) this module's matrix-product filter gradient, in
  place, where they need it (`needs_correction`); everything else stays
  native. Returns how many layers. Call before the first training step is
  traced; `restore` undoes it."""
  if not needs_correction():
    return 0
  return _swap(net, lambda layer: wrong_under_onednn(layer.kernel_size,
                                                     layer.strides[0]),
               corrected_only=True)


def restore(net: keras.Model) -> None:
  """Undoes `use`: plain keras.layers.Conv2D with their biases again (the
  moving means keep what the biases were, so the function is the same)."""
  for layer in model.leaf_layers(net):
    if isinstance(layer, MatmulConv2D):
      layer.__class__ = keras.layers.Conv2D
      layer._corrected_only = False
      layer._subsample_pointwise = True
    if getattr(layer, '_bias_in_batch_norm', False):
      layer.use_bias = True
      layer._bias_in_batch_norm = False
      layer.bias.trainable = layer.trainable

r"""Are this CPU's convolution gradients right? TensorFlow's against an exact
numpy reference, case by case.

  python -m benchmarks.onednn_gradients
  TF_ENABLE_ONEDNN_OPTS=1 python -m benchmarks.onednn_gradients

TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512
VNNI, bf16 or AMX; TF_ENABLE_ONEDNN_OPTS=1 forces them elsewhere. On an
AVX2-only CPU that halved the ResNet50 training step (docs/journal/
2026-12-02-amx-speed.md), but its filter gradient of a 1x1 convolution at
stride 2 on an even-sized map came out wrong. This prints, for each kernel
size, stride, padding and input side, the largest error of the forward
pass, the input gradient and the filter gradient in float32, against a
float64 numpy computation of the same sums, and which cases are wrong.
Nothing is written. lmid_tf turns oneDNN on and replaces the wrong case in
training (lmid_tf/speed/conv_gradients.py, `correct`); this probe times
TensorFlow's own kernels, so it still shows them.
"""

import itertools

from absl import app
import numpy as np
import tensorflow as tf

from benchmarks import machine

# float32 sums of ~100 products of unit normals: errors of ~1e-5; a wrong
# kernel is off by whole units.
WRONG = 1e-3


def _padding(side: int, kernel: int, stride: int, padding: str) -> tuple:
  """(output side, padding before) as TensorFlow computes them."""
  if padding == 'VALID':
    return (side - kernel) // stride + 1, 0
  out = -(-side // stride)
  return out, max((out - 1) * stride + kernel - side, 0) // 2


def reference(x, w, dy, stride: int, padding: str) -> tuple:
  """(y, dL/dx, dL/dw) of y = conv2d(x, w) with upstream gradient dy, in
  float64, as sums over the kernel's offsets."""
  x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
  batch, side, _, channels = x.shape
  kernel = w.shape[0]
  out, before = _padding(side, kernel, stride, padding)
  size = max(before + side, (out - 1) * stride + kernel)
  padded = np.zeros([batch, size, size, channels])
  padded[:, before:before + side, before:before + side] = x
  y = np.zeros([batch, out, out, w.shape[3]])
  dpadded = np.zeros_like(padded)
  dw = np.zeros_like(w)
  span = (out - 1) * stride + 1
  for i, j in itertools.product(range(kernel), range(kernel)):
    window = padded[:, i:i + span:stride, j:j + span:stride]
    y += np.einsum('bhwc,ck->bhwk', window, w[i, j])
    dw[i, j] = np.einsum('bhwc,bhwk->ck', window, dy)
    dpadded[:, i:i + span:stride, j:j + span:stride] += np.einsum(
        'bhwk,ck->bhwc', dy, w[i, j])
  return y, dpadded[:, before:before + side, before:before + side], dw


def errors(kernel: int, stride: int, padding: str, side: int,
           seed: int = 0) -> tuple:
  """Largest absolute errors of TensorFlow's (y, dx, dw) on random inputs."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=[2, side, side, 5]).astype(np.float32)
  w = rng.normal(size=[kernel, kernel, 5, 6]).astype(np.float32)
  tx, tw = tf.constant(x), tf.constant(w)
  with tf.GradientTape() as tape:
    tape.watch([tx, tw])
    y = tf.nn.conv2d(tx, tw, stride, padding)
  dy = rng.normal(size=y.shape).astype(np.float32)
  dx, dw = tape.gradient(y, [tx, tw], output_gradients=tf.constant(dy))
  expected = reference(x, w, dy, stride, padding)
  return tuple(float(np.abs(got.numpy() - want).max())
               for got, want in zip((y, dx, dw), expected))


def main(argv):
  del argv
  print('| kernel | stride | padding | input side | forward | input gradient '
        '| filter gradient | |')
  print('| ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |')
  wrong = 0
  for kernel, stride, padding, side in itertools.product(
      (1, 3, 7), (1, 2), ('SAME', 'VALID'), (8, 9, 16, 17)):
    found = errors(kernel, stride, padding, side)
    verdict = 'WRONG' if max(found) > WRONG else ''
    wrong += bool(verdict)
    print(f'| {kernel} | {stride} | {padding} | {side} | '
          + ' | '.join(f'{e:.1e}' for e in found) + f' | {verdict} |')
  print(f'\n{wrong} wrong case(s) (error > {WRONG:g})')
  machine.print_footer('python -m benchmarks.onednn_gradients')


if __name__ == '__main__':
  app.run(main)

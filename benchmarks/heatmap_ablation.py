r"""Does a Landmark-Id model use its heatmaps? Evaluate it with them altered.

  python -m benchmarks.heatmap_ablation \
      --model=runs/synthetic_cpu_landmark_id/embedding_model.keras \
      --data=data/synthetic/tfrecords

Runs the standard evaluation four times: with the true heatmaps, with the
last landmark hidden, with all heatmaps zero, and with each image given
another image's heatmaps. A model that uses landmarks loses accuracy in the
last three; one that ignores them does not.
"""

import sys

from absl import app
from absl import flags
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf.evaluation import retrieval


def altered(embed_fn, kind: str):
  def run(inputs):
    maps = inputs['heatmaps']
    if kind == 'last landmark hidden':
      maps = tf.concat([maps[..., :-1], tf.zeros_like(maps[..., -1:])], -1)
    elif kind == 'all zero':
      maps = tf.zeros_like(maps)
    elif kind == "another image's":
      maps = tf.roll(maps, shift=1, axis=0)
    return embed_fn({'image': inputs['image'], 'heatmaps': maps})
  return run


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, 'Landmark-Id .keras model or SavedModel.')
  flags.DEFINE_string('data', None, 'Dataset folder (gallery and query).')


def main(argv):
  del argv
  print('command: python -m benchmarks.heatmap_ablation '
        + ' '.join(sys.argv[1:]))
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  if not pre.num_landmarks:
    sys.exit('heatmap_ablation: error: the model takes no heatmaps')
  print(f'{"heatmaps at evaluation":24} {"top-1":>7} {"top-5":>7} '
        f'{"top-10":>7} {"mAP":>7}')
  for kind in ('true', 'last landmark hidden', 'all zero', "another image's"):
    r = retrieval.evaluate(altered(embed_fn, kind), FLAGS.data, pre).metrics
    print(f'{kind:24} {100 * r["top1"]:6.2f}% {100 * r["top5"]:6.2f}% '
          f'{100 * r["top10"]:6.2f}% {100 * r["mAP"]:6.2f}%', flush=True)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['model', 'data'])
  app.run(main)

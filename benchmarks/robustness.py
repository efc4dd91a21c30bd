r"""Re-identification under the paper's robustness protocol, through a model.

  python -m benchmarks.robustness --model=runs/synthetic_cpu/export \
      --data=data/synthetic/tfrecords --rows=clean,noise:0.05,hide:1,hide:2

Each row evaluates the same model (a SavedModel export base or version, or a
.keras file) on gallery and queries whose landmarks are all perturbed the
same seeded way (lmid_tf/pipeline.Perturbation): `noise:r` moves every
landmark uniformly within a disk of radius r (the paper's Table 3), `hide:k`
hides k landmarks of every image (Table 4's question), `clean` neither.
Prints a table with each row's wall time, and the command; each row's
metrics (with its CMC curve) go to --out/<row>.json, by default a
`robustness/` folder beside the export (benchmarks/cmc_plot.py draws them).
`--by_visible` also prints, for each row, the queries grouped by how many
landmarks their annotation marks visible (5, 4, <=3 of five;
metrics.by_visible_count), whatever the model takes (an image-only
baseline too) and before a row hides any, and keeps the groups in the row's
JSON under 'by_visible'.

`--landmarks=predicted` embeds every row with the landmarks that
--landmark_model finds instead (the perturbation then changes nothing);
`--landmarks=refined` perturbs the annotated landmarks first, as a user's
clicks are off, then refines them with the predictor
(landmark_model.refined_landmarks, --refine_radius), as the export's
refined_landmarks signature does.
"""

import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import machine
from lmid_tf import artifacts
from lmid_tf import cli
from lmid_tf import evaluate
from lmid_tf.data import pipeline
from lmid_tf.data import records
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import retrieval


def parse_row(text: str, seed: int) -> pipeline.Perturbation:
  kind, _, value = text.partition(':')
  if kind == 'clean' and not value:
    return pipeline.Perturbation(0.0, 0, seed)
  try:
    if kind == 'noise':
      return pipeline.Perturbation(float(value), 0, seed)
    if kind == 'hide':
      return pipeline.Perturbation(0.0, int(value), seed)
  except ValueError:
    pass
  raise ValueError(f'--rows: {text!r} is not clean, noise:R or hide:K')


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model', None, 'SavedModel (export base or version) '
                      'or .keras embedding model.')
  flags.DEFINE_string('data', None, 'Dataset folder.')
  flags.DEFINE_list('rows', ['clean', 'noise:0.05', 'noise:0.1', 'noise:0.2',
                             'hide:1', 'hide:2'], 'Protocol rows.')
  flags.DEFINE_integer('seed', 0, 'Seed of the perturbations.')
  flags.DEFINE_integer('batch_size', 128, 'Evaluation batch size.')
  flags.DEFINE_bool('by_visible', False, 'Also break each row down by the '
                    'number of visible landmarks in the query.')
  flags.DEFINE_string('out', '', 'Folder for <row>.json; default: '
                      'robustness/ beside the model (robustness_predicted/ '
                      'or robustness_refined/ with those --landmarks).')
  evaluate.define_landmark_flags('the perturbed annotated ones')


def main(argv):
  del argv
  if not FLAGS.model or not FLAGS.data:
    raise app.UsageError('--model and --data are required')
  print('command: python -m benchmarks.robustness ' + ' '.join(sys.argv[1:]))
  print(machine.describe())
  rows = [(text, parse_row(text, FLAGS.seed)) for text in FLAGS.rows]
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  predictor, refine_radius = retrieval.landmark_source(
      FLAGS.landmarks, FLAGS.landmark_model, FLAGS.refine_radius, pre)
  # Each landmark source its own folder, so no row overwrites another's.
  folder = 'robustness' + ('' if FLAGS.landmarks == 'annotated'
                           else '_' + FLAGS.landmarks)
  out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(
      FLAGS.model.rstrip('/'))), folder)
  os.makedirs(out, exist_ok=True)
  print(f'{"row":12} {"top-1":>8} {"top-5":>8} {"mAP":>8} {"mINP":>8} '
        f'{"seconds":>8}')
  breakdowns = []
  if FLAGS.by_visible:
    query_labels, query_visible = annotated_visibility(FLAGS.data, 'query')
  for text, perturbation in rows:
    start = time.perf_counter()
    result = retrieval.evaluate(embed_fn, FLAGS.data, pre,
                                batch_size=FLAGS.batch_size,
                                perturbation=perturbation,
                                predictor=predictor,
                                refine_radius=refine_radius)
    m = result.metrics
    if FLAGS.by_visible:
      # evaluate() embeds the split in file order, as read_split reads it.
      assert np.array_equal(result.query['labels'], query_labels)
      m['by_visible'] = metrics_lib.by_visible_count(
          result.distances, result.query['labels'], result.gallery['labels'],
          query_visible)
      breakdowns.append((text, m['by_visible']))
    artifacts.write_json(os.path.join(out, text.replace(':', '_') + '.json'),
                         m)
    print(f'{text:12} {100 * m["top1"]:7.2f}% {100 * m["top5"]:7.2f}% '
          f'{100 * m["mAP"]:7.2f}% {100 * m["mINP"]:7.2f}% '
          f'{time.perf_counter() - start:8.1f}', flush=True)
  for text, groups in breakdowns:
    print()
    print(format_by_visible(text, groups))


def annotated_visibility(data_dir: str, split: str) -> tuple:
  """(labels [N], visible [N, K] 0/1) of a split's records, in file order:
  the annotation's visibility, which an image-only model's inputs lack."""
  parsed = records.parse_split(data_dir, split)
  return parsed['label'], parsed['visible']


def format_by_visible(row: str, groups: dict) -> str:
  """A table of one row's by_visible_count groups (a dash for an empty
  group)."""
  lines = [f'{row}: by visible landmarks in the query',
           f'{"visible":12} {"queries":>8} {"top-1":>8} {"top-5":>8} '
           f'{"mAP":>8}']
  for name, g in groups.items():
    if not g['queries']:
      lines.append(f'{name:12} {0:8d} {"-":>8} {"-":>8} {"-":>8}')
      continue
    lines.append(f'{name:12} {g["queries"]:8d} {100 * g["top1"]:7.2f}% '
                 f'{100 * g["top5"]:7.2f}% {100 * g["mAP"]:7.2f}%')
  return '\n'.join(lines)


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'robustness')

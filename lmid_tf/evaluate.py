r"""Retrieval evaluation: rank the gallery for every query; CMC and mAP.

  python -m lmid_tf.evaluate --model=runs/demo/embedding_model.keras \
      --data=data/synthetic/tfrecords --out=runs/demo/eval

`--model` is a `.keras` embedding model written by lmid_tf.train (its
`preprocess.json` beside it) or a SavedModel from serving.export (a version
folder, or the export base, whose newest version is used). Writes
results.json, cmc.png and ranked.png (each query beside its top 5, green
frame = same identity, red = different).
"""

import os

from absl import app
from absl import flags

from lmid_tf import cli
from lmid_tf import artifacts
from lmid_tf.data import pipeline
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import retrieval
from lmid_tf.modeling import landmark_model


FLAGS = flags.FLAGS


def define_landmark_flags(given: str):
  """--landmarks, --landmark_model and --refine_radius, for the tools that
  embed a split (this one and benchmarks/robustness.py); `given` names the
  landmarks the records hold as that tool uses them."""
  flags.DEFINE_enum('landmarks', 'annotated', retrieval.LANDMARK_SOURCES,
                    f'Landmarks to embed with: {given}, those '
                    f'--landmark_model finds, or {given} refined by it (each '
                    f'moved to the prediction when that is confident and '
                    f'within --refine_radius).')
  flags.DEFINE_string('landmark_model', '', 'landmark_model.keras from '
                      'lmid_tf.train_landmarks, for --landmarks=predicted '
                      'or refined.')
  flags.DEFINE_float('refine_radius', landmark_model.REFINE_RADIUS,
                     '--landmarks=refined: how far (fraction of the image '
                     'width) a prediction may lie from the given landmark '
                     'and replace it.')


def define_flags():
  flags.DEFINE_string('model', None, '.keras embedding model or SavedModel '
                      '(version folder or export base).')
  flags.DEFINE_string('data', None, 'Dataset folder from data_tools.convert.')
  flags.DEFINE_string('out', '', 'Folder for results.json, cmc.png, '
                      'ranked.png; default: eval/ beside --model.')
  flags.DEFINE_integer('batch_size', 64, 'Evaluation batch size.')
  flags.DEFINE_float('landmark_noise', 0.0, 'Robustness protocol (paper '
                     'Table 3): move every gallery and query landmark '
                     'uniformly within a disk of this radius (fraction of '
                     'the image size).')
  flags.DEFINE_integer('hide_landmarks', 0, 'Robustness protocol: hide this '
                       'many landmarks of every gallery and query image.')
  flags.DEFINE_list('flip_pairs', [], 'Test-time flipping: left:right '
                    'landmark name pairs that swap in a mirror image, e.g. '
                    'eye_l:eye_r,fin_l:fin_r. Only for bodies whose marks are '
                    'mirror-symmetric; "none" flips a model without '
                    'landmarks. The synthetic set declares none (its '
                    'patterns are not symmetric).')
  define_landmark_flags('the annotated ones')
  flags.DEFINE_bool('rerank', False, 'Rank by k-reciprocal re-ranking '
                    '(reranking.py; memory grows with (queries + gallery)^2).')
  flags.DEFINE_bool('match_viewpoint', False, 'Rank each query only against '
                    'gallery photos of its viewpoint (the records\' '
                    'viewpoint; an unknown viewpoint matches all).')
  flags.DEFINE_integer('perturbation_seed', 0, 'Seed of the protocol\'s '
                       'draws (per image, whatever the batch size).')


def main(argv):
  del argv
  if not FLAGS.model or not FLAGS.data:
    raise app.UsageError('--model and --data are required')
  out = FLAGS.out or os.path.join(
      os.path.dirname(os.path.abspath(FLAGS.model.rstrip('/'))), 'eval')
  if FLAGS.landmark_noise < 0 or FLAGS.hide_landmarks < 0:
    raise ValueError('--landmark_noise and --hide_landmarks must be >= 0')
  perturbation = pipeline.Perturbation(
      FLAGS.landmark_noise, FLAGS.hide_landmarks, FLAGS.perturbation_seed)
  embed_fn, pre = artifacts.load_embedder(FLAGS.model)
  if perturbation and not pre.num_landmarks:
    raise ValueError('--landmark_noise/--hide_landmarks: this model takes no '
                     'landmarks')
  flip_pairs = retrieval.parse_flip_pairs(FLAGS.flip_pairs, FLAGS.data, pre)
  predictor, refine_radius = retrieval.landmark_source(
      FLAGS.landmarks, FLAGS.landmark_model, FLAGS.refine_radius, pre)
  result = retrieval.evaluate(embed_fn, FLAGS.data, pre, out, FLAGS.batch_size,
                    title=os.path.basename(FLAGS.model.rstrip('/')),
                    perturbation=perturbation, rerank=FLAGS.rerank,
                    flip_pairs=flip_pairs, predictor=predictor,
                    match_viewpoint=FLAGS.match_viewpoint,
                    refine_radius=refine_radius)
  print(f'evaluate: {metrics_lib.format_results(result.metrics)}; wrote {out}')


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'evaluate')

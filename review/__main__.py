r"""The review desk: import, annotate, review and name the animals.

  python -m review --catalogue=season.sqlite --model=runs/x/export \
      [--port=8765] [--host=127.0.0.1] [--max_upload_mb=40] \
      [--photo_root=photos/]

Opens http://127.0.0.1:8765/ (loopback only, unless --host says otherwise;
then --accounts is required, see review.accounts). The catalogue file is
created when missing. docs/REVIEW_DESK.md is the user guide.
"""

from absl import flags

from lmid_tf import cli
from review import desk

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('catalogue', '', 'Catalogue database (.sqlite); '
                      'created when missing.')
  flags.DEFINE_string('model', '', 'Exported SavedModel (serving.export; '
                      'an export base uses its newest version).')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to serve on. Anything '
                      'but loopback requires --accounts.')
  flags.DEFINE_integer('port', 8765, 'Port.')
  flags.DEFINE_float('max_upload_mb', 40.0, 'Largest photo accepted, MB.')
  flags.DEFINE_string('photo_root', '.', 'Folder whose subfolders the Import '
                      'page may import from; nothing outside it is opened.')
  flags.DEFINE_string('accounts', '', 'Reviewer accounts file '
                      '(python -m review.accounts add NAME --accounts=F).')
  flags.DEFINE_integer('top_k', 5, 'Candidate individuals per photo.')
  flags.DEFINE_enum('search', 'auto', ['auto', 'exact', 'approximate'],
                    'Candidate search: exact (one matrix product), '
                    'approximate (FAISS IVF), or auto: approximate from '
                    '50,000 embeddings on.')


def main(argv):
  del argv
  if not FLAGS.catalogue or not FLAGS.model:
    raise ValueError('--catalogue and --model are required')
  if FLAGS.max_upload_mb <= 0:
    raise ValueError('--max_upload_mb must be positive')
  config = desk.DeskConfig(
      catalogue=FLAGS.catalogue, model=FLAGS.model, host=FLAGS.host,
      port=FLAGS.port, max_upload_mb=FLAGS.max_upload_mb,
      photo_root=FLAGS.photo_root, accounts=FLAGS.accounts, top_k=FLAGS.top_k,
      search=FLAGS.search)
  app = desk.create_app(config)
  print(f'review: serving {FLAGS.catalogue} on http://{FLAGS.host}:'
        f'{FLAGS.port}/ (Ctrl-C stops)', flush=True)
  from werkzeug import serving   # pylint: disable=import-outside-toplevel
  serving.run_simple(FLAGS.host, FLAGS.port, app, threaded=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main, 'review')

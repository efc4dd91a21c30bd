r"""Reviewer accounts, for a desk served beyond loopback.

  python -m review.accounts add NAME --accounts=reviewers.json   # asks twice

Stores a salted hash (werkzeug.security), never the password.
"""

import getpass
import sys

from absl import flags

from lmid_tf import cli
from review import security

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 3 or argv[1] != 'add':
    raise ValueError('usage: python -m review.accounts add NAME '
                     '--accounts=FILE')
  if not FLAGS.accounts:
    raise ValueError('--accounts=FILE is required')
  password = getpass.getpass(f'password for {argv[2]}: ')
  if password != getpass.getpass('again: '):
    sys.exit('accounts: error: the two passwords differ')
  security.add_account(FLAGS.accounts, argv[2], password)
  print(f'accounts: {argv[2]} can sign in ({FLAGS.accounts})')


if __name__ == '__main__':
  flags.DEFINE_string('accounts', '', 'Accounts file (JSON).')
  cli.run(main, 'accounts')

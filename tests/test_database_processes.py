"""The catalogue database under several writer processes and under kill -9:
one decision wins and the other is told, and a killed writer leaves every
decision either recorded whole or not at all."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from lmid_tf.identification import database
from lmid_tf.identification import identities
from lmid_tf.identification import reviews

_RACE = r'''
import os, sys, time
from lmid_tf.identification import database, reviews
path, reviewer, go = sys.argv[1:4]
cat = database.open(path)
while not os.path.exists(go):
  time.sleep(0.005)
try:
  reviews.record_decision(cat, 2, 'new', reviewer, new_name=f'by {reviewer}')
  print('recorded')
except database.AlreadyDecided as e:
  print('refused:', e)
for i in range(100):
  database.add_photo(cat, f'{reviewer}-{i}', f'{reviewer}/{i}.jpg')
'''

_DECIDE_FOREVER = r'''
import random, sys
from lmid_tf.identification import database, reviews
cat = database.open(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
count = 0
while True:
  query = rng.randint(2, 11)
  active = reviews.current_decision(cat, query)
  if active is not None and rng.random() < 0.5:
    reviews.undo(cat, active['id'], 'robot')
  else:
    choice = rng.choice(['same', 'new', 'cannot_tell'])
    extra = ({'candidate_annotation_id': 1} if choice == 'same' else
             {'new_name': f'n{count}'} if choice == 'new' else {})
    reviews.record_decision(cat, query, choice, 'robot',
                            replaces=active['id'] if active else None, **extra)
  count += 1
  print(count, flush=True)
'''


def _catalogue(path, queries):
  with database.open(path) as cat:
    for i in range(queries + 1):
      photo_id, _ = database.add_photo(cat, f'h{i}', f'{i}.jpg')
      database.add_annotation(cat, photo_id)
    identities.assign(cat, 1, identities.create_individual(cat, 'Stripe',
                                                           'ana'), 'ana')


@pytest.mark.slow
def test_two_writer_processes(tmp_path):
  path, go = str(tmp_path / 'c.sqlite'), str(tmp_path / 'go')
  _catalogue(path, 1)
  writers = [subprocess.Popen(
      [sys.executable, '-c', _RACE, path, name, go], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ('alice', 'bob')]
  time.sleep(3)   # both are waiting with the catalogue open
  open(go, 'w').close()
  outputs = [w.communicate(timeout=120) for w in writers]
  assert [w.returncode for w in writers] == [0, 0], outputs
  said = sorted(out.splitlines()[0] for out, _ in outputs)
  assert said[0] == 'recorded'
  assert said[1].startswith('refused: annotation 2 was already decided by ')
  with database.open(path) as cat:
    [decision] = reviews.history(cat)
    assert said[1].split('decided by ')[1].startswith(decision['reviewer'])
    assert database.annotation(cat, 2)['individual'] == (
        f'by {decision["reviewer"]}')
    assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 202
    assert database.check_consistency(cat) == []


@pytest.mark.slow
@pytest.mark.parametrize('seed', [1, 2])
def test_kill_9_during_decisions_leaves_the_database_consistent(tmp_path,
                                                               seed):
  path = str(tmp_path / 'c.sqlite')
  _catalogue(path, 10)
  robot = subprocess.Popen([sys.executable, '-c', _DECIDE_FOREVER, path,
                            str(seed)], cwd=REPO, stdout=subprocess.PIPE,
                           text=True)
  done = 0
  while done < 20 + 15 * seed:   # kill it at a different moment each time
    line = robot.stdout.readline()
    assert line, 'the decision loop stopped by itself'
    done = int(line)
  os.kill(robot.pid, signal.SIGKILL)
  robot.wait()
  with database.open(path) as cat:
    assert database.check_consistency(cat) == []
    recorded = cat.execute('SELECT count(*) FROM reviews').fetchone()[0]
    assert recorded >= done   # everything it reported is in
    for query in range(2, 12):
      active = reviews.current_decision(cat, query)
      individual = database.annotation(cat, query)['individual_id']
      if active and active['decision'] in ('same', 'new'):
        assert individual == identities.live(
            cat, active['candidate_individual_id'])
      else:
        assert individual is None
    # the log explains the state: replaying the assign events of each
    # annotation ends at its current individual
    for query in range(2, 12):
      assigned = [e['individual_id'] for e in identities.events(
          cat, annotation_id=query) if e['kind'] == 'assign']
      assert (assigned[-1] if assigned else None) == database.annotation(
          cat, query)['individual_id']
    # and it goes on working
    reviews.record_decision(cat, 1, 'cannot_tell', 'ana')

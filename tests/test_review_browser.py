"""The review desk end to end: the real server (python -m review) in a
subprocess, driven by a real headless Chromium through Playwright, the way
a reviewer clicks; and a kill -9 of the server in the middle of decisions.

Chromium is Debian's (/usr/bin/chromium; `.ci/run` installs it); Playwright
never downloads a browser of its own here.
"""

import csv
import http.cookiejar
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from lmid_tf.identification import database
from lmid_tf.identification import reviews
from review import context
from review import desk as desk_lib
from review import import_jobs
from conftest import (dataset_photos, landmark_csv)

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu',
                 '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Server:
  """python -m review on a fresh port; stop() or kill() it."""

  def __init__(self, catalogue, model, photo_root):
    self.port = _free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'review', f'--catalogue={catalogue}',
         f'--model={model}', f'--port={self.port}',
         f'--photo_root={photo_root}'], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while True:
      try:
        urllib.request.urlopen(self.url + '/sign-in', timeout=5)
        return
      except (urllib.error.URLError, ConnectionError):
        if self.process.poll() is not None or time.time() > deadline:
          self.process.kill()
          raise AssertionError('the desk did not start:\n' +
                               self.process.stdout.read())
        time.sleep(0.5)

  def kill(self):
    self.process.send_signal(signal.SIGKILL)
    self.process.wait(timeout=30)

  def stop(self):
    if self.process.poll() is None:
      self.process.terminate()
      self.process.wait(timeout=30)


@pytest.fixture
def browser_context(tmp_path):
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'no Chromium at {CHROMIUM} (apt-get install chromium)')
  from playwright.sync_api import sync_playwright
  with sync_playwright() as playwright:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / 'chromium-profile'), executable_path=CHROMIUM,
        headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
        viewport={'width': 1280, 'height': 900})
    try:
      yield context
    finally:
      context.close()


def _six_photos(tiny_dataset):
  """Two photos each of three individuals, dated one day apart in order."""
  by_identity = {}
  for photo in dataset_photos(tiny_dataset):
    by_identity.setdefault(photo[2], []).append(photo)
  return [p for name in sorted(by_identity)[:3] for p in by_identity[name][:2]]


def _click_at(page, selector, x, y, width, height):
  box = page.locator(selector).bounding_box()
  page.mouse.click(box['x'] + x / width * box['width'],
                   box['y'] + y / height * box['height'])


def test_a_day_at_the_desk_in_chromium(tmp_path, tiny_dataset, desk_export,  # noqa: F811,E501
                                       embedder, browser_context):  # noqa: F811
  photos = _six_photos(tiny_dataset)
  folder = tmp_path / 'upload'
  folder.mkdir()
  for name, data, _, _ in photos:
    (folder / name).write_bytes(data)
  # Landmarks and dates for five photos; the sixth is annotated by clicks.
  dates = {p[0]: {'date': f'2026-05-0{i + 1}', 'location': 'north bay'}
           for i, p in enumerate(photos)}
  (folder / 'sightings.csv').write_bytes(landmark_csv(
      photos[:5], embedder.landmark_names, dates))
  catalogue = str(tmp_path / 'season.sqlite')
  server = Server(catalogue, desk_export, tmp_path)
  try:
    page = browser_context.new_page()
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.goto(server.url + '/')
    page.fill('#name', 'ana')
    page.click('#sign-in')
    # Import the six photos with the CSV.
    page.click('text=Import')
    page.set_input_files('#photos', [str(folder / p[0]) for p in photos])
    page.set_input_files('#upload-form input[name=csv]',
                         str(folder / 'sightings.csv'))
    page.click('#upload')
    page.wait_for_selector('#done:not([hidden])', timeout=120_000)
    assert '6 added' in page.inner_text('#summary')
    # Annotate the one without landmarks by clicking them in order.
    page.click('text=Annotate')
    page.wait_for_selector('#photo img')
    assert photos[5][0] in page.inner_text('h1')
    # The predictor's dashed guesses are where a briefly trained model put
    # them (they vary with the CPU's kernels); a click on one would grab it.
    # Clear them first, as a reviewer starting over does.
    for k in range(len(embedder.landmark_names)):
      page.click(f'#landmark-list li >> nth={k}')
      page.click('#clear')
    page.click('#landmark-list li >> nth=0')
    assert page.locator('#photo circle').count() == 0
    clicked = [[8.0, 20.0], [25.0, 21.0], [18.0, 6.0]]
    for x, y in clicked:
      _click_at(page, '#photo img', x, y, 32, 32)
    page.keyboard.press('Enter')
    page.wait_for_url(re.compile(r'/queue'))
    # Review: the first photo is a new individual, the second the same.
    page.goto(server.url + '/queue?order=date')
    page.click('#start')
    page.wait_for_selector('#new-name')
    page.keyboard.press('n')
    page.keyboard.type('Alpha')
    page.keyboard.press('Enter')
    page.wait_for_function(
        f'document.querySelector("h2") && '
        f'document.querySelector("h2").textContent.includes("{photos[1][0]}")')
    assert 'Alpha' in page.inner_text('#strip')
    page.keyboard.press('1')
    page.wait_for_function('!location.pathname.endsWith("/match/2")')
    # Undo the second decision from its page.
    page.goto(server.url + '/match/2')
    assert 'Decided by ana' in page.inner_text('#decided')
    page.keyboard.press('z')
    page.wait_for_selector('#history')
    page.wait_for_function('!document.querySelector("#decided")')
    # Export the sightings.
    page.click('text=Export')
    with page.expect_download() as download:
      page.click('#sightings')
    rows = list(csv.DictReader(io.StringIO(
        open(download.value.path()).read())))
    assert not errors, errors
  finally:
    server.stop()
  with database.open(catalogue) as cat:
    assert cat.execute('SELECT count(*) FROM photos').fetchone()[0] == 6
    shown = database.annotation(cat, 6)
    assert shown['landmarks_source'] == 'clicked'
    assert shown['landmarks_set_by'] == 'ana'
    for got, want in zip(shown['landmarks'], clicked):
      assert abs(got[0] - want[0]) < 0.6 and abs(got[1] - want[1]) < 0.6
    decisions = cat.rows('SELECT id, query_annotation_id, decision, '
                         'reviewer, supersedes FROM reviews ORDER BY id')
    assert [(r['query_annotation_id'], r['decision'], r['reviewer'])
            for r in decisions] == [(1, 'new', 'ana'), (2, 'same', 'ana'),
                                    (2, 'undo', 'ana')]
    assert decisions[2]['supersedes'] == decisions[1]['id']
    assert database.annotation(cat, 1)['individual'] == 'Alpha'
    assert database.annotation(cat, 2)['individual_id'] is None
    assert cat.execute('SELECT count(*) FROM embeddings').fetchone()[0] == 6
    assert database.check_consistency(cat) == []
  by_photo = {r['photo']: r for r in rows}
  assert by_photo[photos[0][0]]['individual'] == 'Alpha'
  assert by_photo[photos[0][0]]['matched_by'] == 'new'
  assert by_photo[photos[0][0]]['reviewer'] == 'ana'
  assert by_photo[photos[0][0]]['date'] == '2026-05-01'
  assert by_photo[photos[0][0]]['location'] == 'north bay'
  assert by_photo[photos[1][0]]['individual'] == ''


class _Reviewer:
  """A signed-in HTTP session (cookies + CSRF token) without a browser."""

  def __init__(self, url, name):
    self.url = url
    self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(
        http.cookiejar.CookieJar()))
    page = self.opener.open(url + '/sign-in').read().decode()
    self.token = re.search(r'name="csrf-token" content="([^"]+)"',
                           page).group(1)
    self.opener.open(url + '/sign-in', data=urllib.parse.urlencode(
        {'name': name, 'csrf_token': self.token}).encode())

  def post_json(self, path, body):
    request = urllib.request.Request(
        self.url + path, data=json.dumps(body).encode(), headers={
            'Content-Type': 'application/json', 'X-CSRF-Token': self.token})
    try:
      return self.opener.open(request, timeout=60).status
    except urllib.error.HTTPError as e:
      return e.code
    except (urllib.error.URLError, ConnectionError, OSError):
      return None   # the server is gone


def test_kill_9_during_decisions_leaves_the_catalogue_consistent(
    tmp_path, tiny_dataset, desk_export, embedder):  # noqa: F811
  photos = dataset_photos(tiny_dataset)[:12]
  catalogue = str(tmp_path / 'season.sqlite')
  the_desk = context.Desk(desk_lib.DeskConfig(catalogue, desk_export),
                           embedder)
  database.open(catalogue).close()
  job = import_jobs.run_now(the_desk, [(n, b) for n, b, _, _ in photos], {},
                            'setup')
  assert len(job.added) == len(photos), job.refused
  rng = random.Random(0)
  answered, recorded = {}, []
  for round_ in range(3):
    server = Server(catalogue, desk_export, tmp_path)
    reviewer = _Reviewer(server.url, f'r{round_}')

    def decide_all():
      for annotation_id in job.added:
        status = reviewer.post_json(f'/match/{annotation_id}/decide', {
            'decision': 'new', 'name': f'ind{round_}-{annotation_id}'})
        answered[(round_, annotation_id)] = status
        if status is None:
          return

    thread = threading.Thread(target=decide_all, daemon=True)
    thread.start()
    # Kill after a random number of answered decisions, whatever the
    # machine's speed, so the kill falls among them (a sleep would not).
    wanted = rng.randint(1, len(job.added) // 2)
    deadline = time.time() + 120
    while sum(1 for r, _ in answered if r == round_) < wanted:
      assert thread.is_alive() and time.time() < deadline, answered
      time.sleep(0.001)
    server.kill()
    thread.join(timeout=60)
    with database.open(catalogue) as cat:
      assert database.check_consistency(cat) == []
      for annotation_id in job.added:
        shown = database.annotation(cat, annotation_id)
        decided = cat.rows(
            "SELECT r.candidate_individual_id FROM reviews r WHERE "
            "r.query_annotation_id = ? AND r.decision = 'new' AND NOT "
            "EXISTS (SELECT 1 FROM reviews s WHERE s.supersedes = r.id)",
            (annotation_id,))
        # Recorded whole or not at all: a 'new' review, its individual and
        # the photo's assignment exist together.
        assert (shown['individual_id'] is not None) == bool(decided)
        if decided:
          assert shown['individual_id'] == decided[0][
              'candidate_individual_id']
        if answered.get((round_, annotation_id)) == 200:
          assert decided, f'answered 200 but not recorded: {annotation_id}'
      recorded.append(sum(1 for a in job.added if reviews.current_decision(
          cat, a)))
    # Undo everything for the next round (through the library: the server
    # is dead).
    with database.open(catalogue) as cat:
      for annotation_id in job.added:
        active = reviews.current_decision(cat, annotation_id)
        if active:
          reviews.undo(cat, active['id'], 'cleanup')
  # The kills fell among the decisions: some were recorded, not all.
  assert any(0 < n < len(job.added) for n in recorded), recorded

r"""A screenshot of the review desk's match page, from headless Chromium.

  python -m tools.desk_screenshot --catalogue=runs/demo/catalogue.sqlite \
      --model=runs/demo/export/1 --out=docs/review_desk.png

Starts the desk on a free port, signs in as "demo", opens the first photo of
the review queue (most confident first) and saves the page as a PNG.
"""

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from absl import flags

from lmid_tf import cli

FLAGS = flags.FLAGS
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu',
                 '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait(url: str, server) -> None:
  deadline = time.time() + 300
  while True:
    try:
      urllib.request.urlopen(url, timeout=5)
      return
    except (urllib.error.URLError, ConnectionError):
      if server.poll() is not None or time.time() > deadline:
        raise RuntimeError('the desk did not start') from None
      time.sleep(0.5)


def main(argv):
  del argv
  from playwright.sync_api import sync_playwright
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  server = subprocess.Popen([sys.executable, '-m', 'review',
                             f'--catalogue={FLAGS.catalogue}',
                             f'--model={FLAGS.model}', f'--port={port}'])
  try:
    _wait(url + '/sign-in', server)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as (
        profile):
      context = playwright.chromium.launch_persistent_context(
          profile, executable_path=CHROMIUM, headless=True,
          args=CHROMIUM_ARGS, viewport={'width': 1360, 'height': 900})
      page = context.new_page()
      page.goto(url + '/sign-in')
      page.fill('#name', 'demo')
      page.click('#sign-in')
      page.goto(url + '/queue?order=confidence')
      page.click('#start')
      page.wait_for_selector('#strip img')
      page.wait_for_timeout(500)   # the photos' layout after they load
      page.screenshot(path=FLAGS.out, full_page=True)
      context.close()
  finally:
    server.terminate()
    server.wait(timeout=30)
  print(f'desk_screenshot: wrote {FLAGS.out}')


if __name__ == '__main__':
  flags.DEFINE_string('catalogue', '', 'Catalogue database.')
  flags.DEFINE_string('model', '', 'The export the catalogue was built with.')
  flags.DEFINE_string('out', 'docs/review_desk.png', 'PNG to write.')
  cli.run(main, 'desk_screenshot', errors=(RuntimeError,))

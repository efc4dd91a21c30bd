"""Identity-only photos (K = 0) end to end: a folder per individual ->
convert -> baseline training -> export -> dev server + client -> identify."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from conftest import tiny_train_config
from data_tools import convert
from lmid_tf import artifacts
from lmid_tf import train
from lmid_tf.data import preprocess
from serving import client as client_lib
from serving import dev_server
from serving import export


def _folder_of_individuals(root, identities=8, per_identity=4):
  """Each individual is its own coarse colour pattern, photographed with
  noise, as 48 px JPEGs in root/<identity>/."""
  rng = np.random.default_rng(0)
  for i in range(identities):
    pattern = rng.random((6, 6, 3))
    os.makedirs(os.path.join(root, f'animal{i}'))
    for j in range(per_identity):
      image = cv2.resize(pattern, (48, 48), interpolation=cv2.INTER_NEAREST)
      image = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)
      cv2.imwrite(os.path.join(root, f'animal{i}', f'{j}.jpg'),
                  (image * 255).astype(np.uint8))


@pytest.mark.slow
def test_folder_to_served_and_identified_baseline(tmp_path):
  photos, data, run = (str(tmp_path / n) for n in ('photos', 'data', 'run'))
  _folder_of_individuals(photos)
  summary = convert.convert(convert.ConvertConfig(
      images=photos, out=data, test_fraction=0.25, progress=False))
  assert summary['landmarks'] == []
  assert summary['splits']['query']['images'] == 4

  cfg = tiny_train_config(data, run, variant='baseline', backbone='small_cnn',
                          identities_per_batch=3)
  assert cfg.preprocess.num_landmarks == 0
  train.train(cfg)
  model_path = os.path.join(run, artifacts.EMBEDDING_MODEL)

  base = str(tmp_path / 'export')
  path = export.export(model_path, base)
  photo = os.path.join(photos, 'animal0', '0.jpg')
  with open(photo, 'rb') as f:
    encoded = f.read()
  signature = tf.saved_model.load(path).signatures['serving_default']
  expected = signature(images=tf.constant([encoded]))['embedding'].numpy()
  # The export equals the Keras model on the same preprocessing.
  embed_fn, pre = artifacts.load_embedder(model_path)
  image, _ = preprocess.decode(tf.constant(encoded), pre)
  np.testing.assert_allclose(expected, embed_fn(preprocess.model_inputs(
      image[None], tf.zeros([1, 0, 2]), tf.zeros([1, 0]), pre)), atol=1e-5)

  server, port = dev_server.serve(base, 'lmid', port=0, workers=2)
  try:
    client = client_lib.EmbeddingClient(f'127.0.0.1:{port}', timeout=60)
    assert client.signature_inputs() == {'images': ('string', [-1])}
    np.testing.assert_allclose(client.embed([encoded]), expected, atol=1e-5)
    client.close()
  finally:
    server.stop(0)

  catalogue = str(tmp_path / 'catalogue.npz')
  run_identify = lambda *a: subprocess.run(
      [sys.executable, '-m', 'lmid_tf.identify', *a, f'--model={model_path}',
       f'--catalogue={catalogue}'], cwd=REPO, capture_output=True, text=True)
  indexed = run_identify('index', f'--gallery={data}')
  assert indexed.returncode == 0, indexed.stderr
  answered = run_identify('query', f'--images={photo}', '--json')
  assert answered.returncode == 0, answered.stderr
  answer = json.loads(answered.stdout)
  # animal0/0.jpg is in the catalogue (train identities are in the gallery).
  assert answer['identity'] == 'animal0'
  assert answer['nearest'] == pytest.approx(0.0, abs=1e-3)
  assert answer['matches'][0]['catalogue_photo'] == 'animal0/0.jpg'

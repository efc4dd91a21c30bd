"""Where everything a run or an export writes lives, and loading any model.

A training run folder (`--run_dir`):

  config.json             the resolved TrainConfig
  preprocess.json         PreprocessConfig of the model (read by every loader)
  checkpoint/             resumable state, see train.py
  logs/                   TensorBoard
  embedding_model.keras   the inference model
  eval/                   final evaluation (eval/<phase>/ after each stage)
  export/<version>/       SavedModels for TF Serving (serving.export)

An export base holds numbered SavedModel versions (TF Serving's layout); each
carries its PreprocessConfig in `assets.extra/preprocess.json`.

Every file is written under a temporary name and renamed, so a reader never
sees half of one.
"""

import json
import os

import tensorflow as tf

from lmid_tf import files
from lmid_tf.data import preprocess
from lmid_tf.speed import single_photo

CONFIG_FILE = 'config.json'
PREPROCESS_FILE = 'preprocess.json'
CHECKPOINT_DIR = 'checkpoint'
LOGS_DIR = 'logs'
EMBEDDING_MODEL = 'embedding_model.keras'
EVAL_DIR = 'eval'
EXPORT_DIR = 'export'
# Where an exported SavedModel keeps its preprocessing settings.
SAVEDMODEL_PREPROCESS = os.path.join('assets.extra', PREPROCESS_FILE)


write_text = files.write_text


def write_json(path: str, value) -> None:
  write_text(path, json.dumps(value, indent=2, default=str))


# ---- export versions --------------------------------------------------------

def versions(export_base: str) -> list:
  """Complete numbered versions under an export base, ascending.

  A version folder is complete once it holds saved_model.pb; exports are
  renamed into place whole, so this only guards against foreign folders.
  """
  if not os.path.isdir(export_base):
    return []
  return sorted(int(d) for d in os.listdir(export_base) if d.isdigit() and
                os.path.exists(os.path.join(export_base, d, 'saved_model.pb')))


def latest_version(export_base: str) -> str:
  """The newest version folder; ValueError if there is none."""
  found = versions(export_base)
  if not found:
    raise ValueError(f'{export_base}: neither a SavedModel nor an export base '
                     'with numbered versions')
  return os.path.join(export_base, str(found[-1]))


def next_version(export_base: str) -> int:
  """One more than any numbered folder (complete or not), so a new export
  never lands on an old one."""
  if not os.path.isdir(export_base):
    return 1
  return max((int(d) for d in os.listdir(export_base) if d.isdigit()),
             default=0) + 1


# ---- preprocessing settings -------------------------------------------------

def write_preprocess(directory: str, pre: preprocess.PreprocessConfig) -> None:
  write_text(os.path.join(directory, PREPROCESS_FILE), pre.to_json())


def _read_preprocess(path: str) -> preprocess.PreprocessConfig:
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: every model needs its '
                            'preprocessing settings beside it')
  with open(path) as f:
    return preprocess.PreprocessConfig.from_json(f.read())


def resolve_model(model_path: str) -> tuple:
  """('keras' | 'savedmodel', path) for a .keras file, a SavedModel or an
  export base (its newest version)."""
  if os.path.isdir(model_path):
    if not os.path.exists(os.path.join(model_path, 'saved_model.pb')):
      model_path = latest_version(model_path)
    return 'savedmodel', model_path
  if not model_path.endswith('.keras'):
    raise ValueError(f'{model_path}: expected a .keras file or a SavedModel '
                     'folder')
  if not os.path.exists(model_path):
    raise FileNotFoundError(f'{model_path}: no such model')
  return 'keras', model_path


def model_preprocess(model_path: str) -> preprocess.PreprocessConfig:
  """The PreprocessConfig saved with a .keras model or a SavedModel."""
  kind, path = resolve_model(model_path)
  if kind == 'savedmodel':
    return _read_preprocess(os.path.join(path, SAVEDMODEL_PREPROCESS))
  return _read_preprocess(os.path.join(os.path.dirname(path), PREPROCESS_FILE))


def load_embedder(model_path: str) -> tuple:
  """Returns (embed_fn, PreprocessConfig) for a .keras file or SavedModel.

  embed_fn maps the model's named inputs ({'image', 'heatmaps'?}) to a numpy
  [B, D] embedding.
  """
  kind, path = resolve_model(model_path)
  pre = model_preprocess(path)
  if kind == 'savedmodel':
    # Small batches (a single query photo) take the frozen copy.
    loaded = tf.saved_model.load(path)
    signature = single_photo.SmallBatchFunction(
        loaded.signatures['preprocessed'], owner=loaded)
    return (lambda inputs: signature(**inputs)['embedding'].numpy()), pre
  import keras
  model = keras.saving.load_model(path)
  run = tf.function(lambda inputs: model(inputs, training=False)['embedding'])
  return (lambda inputs: run(inputs).numpy()), pre

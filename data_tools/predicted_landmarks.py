"""Landmarks for photos that came without them, from a landmark predictor.

  python -m data_tools.convert --images=photos/ --out=data/mine \
      --landmark_model=runs/lm/landmark_model.keras

The bootstrap of a collection without landmarks: click a few photos (in the
review desk, or a CSV), train `lmid_tf.train_landmarks` on those, then
convert the whole collection with that predictor. Every photo without a
clicked landmark gets the predictor's (those it finds above
`landmark_model.VISIBLE` confidence), and its record says so
(`landmarks/source = predicted`); clicked landmarks are kept as they are.
Landmark-Id then trains on the result like on any annotated set.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from lmid_tf.modeling import landmark_model


class Predictor:
  """A trained predictor, loaded once; `names` are its landmarks."""

  def __init__(self, path: str, batch_size: int = 64):
    self.net, self.pre = landmark_model.load(path)
    self.names = tuple(self.pre.landmark_names)
    self.batch_size = batch_size
    self._run = tf.function(lambda encoded: landmark_model.found_landmarks(
        landmark_model.predict_encoded(self.net, self.pre, encoded)))

  def __call__(self, encoded: list) -> tuple:
    """Encoded photos -> (xs, ys, visible), each [N, K] numpy: normalised
    coordinates, 0 where a landmark was not found."""
    xs, ys, visible = [], [], []
    for start in range(0, len(encoded), self.batch_size):
      points, found = self._run(tf.constant(
          encoded[start:start + self.batch_size]))
      xs.append(points.numpy()[..., 0])
      ys.append(points.numpy()[..., 1])
      visible.append(found.numpy().astype(np.int64))
    k = len(self.names)
    empty = np.zeros((0, k))
    return (np.concatenate(xs or [empty]), np.concatenate(ys or [empty]),
            np.concatenate(visible or [empty.astype(np.int64)]))


def check_names(given: tuple, predictor: Predictor, source: str) -> tuple:
  """The dataset's landmark names: the predictor's. Clicked landmarks, if
  the file has any, must be the same ones in the same order."""
  if given and tuple(given) != predictor.names:
    raise ValueError(
        f'{source} has landmarks {list(given)}, the landmark model predicts '
        f'{list(predictor.names)}: they must be the same, in the same order')
  if not predictor.names:
    raise ValueError('the landmark model predicts no landmarks')
  return predictor.names


def fill(stored: list, predictor: Predictor) -> tuple:
  """photos.Stored items -> (the items, those without a visible landmark
  given the predictor's instead; a list of True where predicted)."""
  missing = [i for i, s in enumerate(stored) if not any(s.visible)]
  xs, ys, visible = predictor([stored[i].encoded for i in missing])
  filled, predicted = list(stored), [False] * len(stored)
  for row, i in enumerate(missing):
    filled[i] = dataclasses.replace(
        stored[i], xs=xs[row].tolist(), ys=ys[row].tolist(),
        visible=visible[row].tolist())
    predicted[i] = True
  return filled, predicted

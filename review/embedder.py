"""The exported SavedModel, as the desk uses it: one photo in, its embedding
(and, without clicked landmarks, the landmarks the predictor finds) out.

Both calls go through the export's own signatures, whose graph decodes,
resizes, aligns and renders heatmaps with lmid_tf.data.preprocess, the
functions training used; the desk never preprocesses a photo itself.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from lmid_tf import artifacts
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.speed import single_photo

# serving.export's signature names (the desk does not import serving/).
SERVING_SIGNATURE = 'serving_default'
IMAGES_ONLY_SIGNATURE = 'images_only'
# A landmark counts as found above this confidence, as in the export.
FOUND = 0.5


@dataclasses.dataclass(frozen=True)
class Found:
  """What the predictor found in one photo."""
  landmarks: list      # [[x, y] | None] * K, photo pixels; None: not found
  confidence: list     # [K] floats


class Embedder:
  """Loads an export (a SavedModel folder or an export base: its newest
  version) once; `embed` and `predict` are then one signature call each."""

  def __init__(self, model_path: str):
    kind, path = artifacts.resolve_model(model_path)
    if kind != 'savedmodel':
      raise ValueError(f'--model={model_path}: the desk needs the exported '
                       'SavedModel (python -m serving.export), not a .keras '
                       'file')
    self.path = path
    self.preprocess = artifacts.model_preprocess(path)
    # As `identify index --model=` names it: give both the same path.
    self.fingerprint = catalogue_lib.model_fingerprint(model_path)
    loaded = tf.saved_model.load(path)
    self._loaded = loaded   # keeps the signatures' variables alive
    # One photo a call: the frozen copy (lmid_tf/speed/single_photo.py).
    self._serving = single_photo.SmallBatchFunction(
        loaded.signatures[SERVING_SIGNATURE])
    images_only = loaded.signatures.get(IMAGES_ONLY_SIGNATURE)
    self._images_only = images_only and single_photo.SmallBatchFunction(
        images_only)

  @property
  def landmark_names(self) -> tuple:
    names = tuple(self.preprocess.landmark_names)
    count = self.preprocess.num_landmarks
    return names if len(names) == count else tuple(
        f'landmark {k + 1}' for k in range(count))

  @property
  def can_predict(self) -> bool:
    return self._images_only is not None

  def embed(self, photo: bytes, landmarks: list) -> np.ndarray:
    """Encoded photo + [[x, y] | None] * K pixel landmarks -> [D] float32."""
    inputs = {'images': tf.constant([photo])}
    if self.preprocess.num_landmarks:
      points = np.zeros([1, self.preprocess.num_landmarks, 2], np.float32)
      visible = np.zeros([1, self.preprocess.num_landmarks], np.float32)
      for k, point in enumerate(landmarks):
        if point is not None:
          points[0, k], visible[0, k] = point, 1.0
      inputs.update(landmarks=tf.constant(points),
                    visibility=tf.constant(visible))
    return self._serving(**inputs)['embedding'].numpy()[0].astype(np.float32)

  def predict(self, photo: bytes) -> tuple:
    """Encoded photo -> (Found, [D] embedding on those landmarks), or
    (None, None) when the export has no landmark predictor."""
    if self._images_only is None:
      return None, None
    out = self._images_only(images=tf.constant([photo]))
    confidence = out['confidence'].numpy()[0].tolist()
    points = out['landmarks'].numpy()[0].tolist()
    landmarks = [[float(x), float(y)] if c > FOUND else None
                 for (x, y), c in zip(points, confidence)]
    return (Found(landmarks, confidence),
            out['embedding'].numpy()[0].astype(np.float32))

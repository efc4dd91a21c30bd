"""A catalogue from a gallery, and its "new individual?" threshold."""

import os

import numpy as np

from lmid_tf import artifacts
from lmid_tf.data import pipeline
from lmid_tf.evaluation import embedding as embedding_lib
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.identification import catalogue as catalogue_lib
from lmid_tf.identification import photos as photos_lib


def build_catalogue(model_path: str, gallery: str, split: str = 'gallery',
                    images_root: str = '', batch_size: int = 64,
                    identity_field: str = 'identity',
                    path_field: str = '') -> catalogue_lib.Catalogue:
  """Embeds a gallery: a TFRecord dataset folder, or an annotation CSV."""
  embed_fn, pre = artifacts.load_embedder(model_path)
  if os.path.isdir(gallery):
    embedded = embedding_lib.embed_split(embed_fn, pipeline.eval_dataset(
        gallery, split, pre, batch_size))
    embeddings, images = embedded['embeddings'], embedded['images']
    landmarks, visible = embedded['landmarks'], embedded['visible']
    names = np.array([n.decode() for n in embedded['names']])
    paths = np.array([p.decode() for p in embedded['paths']])
  else:
    photos, points, vis, names, paths = photos_lib.read_photo_annotations(
        gallery, images_root, pre.num_landmarks, identity_field, path_field)
    if not photos:
      raise ValueError(f'{gallery}: no photos')
    embedded = embedding_lib.embed_photos(embed_fn, pre, photos, points, vis, batch_size)
    embeddings, images = embedded['embeddings'], embedded['images']
    landmarks, visible = embedded['landmarks'], embedded['visible']
    names, paths = np.array(names), np.array(paths)
  return catalogue_lib.Catalogue(
      embeddings=embeddings.astype(np.float32), names=names, paths=paths,
      thumbnails=np.stack([photos_lib.thumbnail(im) for im in images]),
      landmarks=np.asarray(landmarks, np.float32),
      visible=np.asarray(visible, np.float32),
      fingerprint=catalogue_lib.fingerprint(model_path, photos_lib.gallery_files(
          gallery, split, images_root, identity_field, path_field)),
      model=catalogue_lib.model_fingerprint(model_path))


def calibrate(model_path: str, catalogue: catalogue_lib.Catalogue,
              held_out: str, split: str = 'query', target_fpr: float = 0.05,
              batch_size: int = 64) -> dict:
  embed_fn, pre = artifacts.load_embedder(model_path)
  embedded = embedding_lib.embed_split(embed_fn, pipeline.eval_dataset(
      held_out, split, pre, batch_size))
  names = np.array([n.decode() for n in embedded['names']])
  distances = metrics_lib.distance_matrix(embedded['embeddings'],
                                       catalogue.embeddings)
  same = names[:, None] == catalogue.names[None, :].astype(str)
  known_rows = same.any(axis=1)
  if not known_rows.any():
    raise ValueError(f'{held_out} ({split}): no query identity is in the '
                     'catalogue, nothing to calibrate the known side on')
  known = distances[known_rows].min(axis=1)
  new = np.where(same, np.inf, distances).min(axis=1)
  return catalogue_lib.calibrate_threshold(known, new, target_fpr)

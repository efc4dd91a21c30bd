"""An annotation's embedding (and predicted landmarks) from the model.

Embeddings belong to the landmarks they were computed on: database
set_landmarks drops them, and `ensure_embedding` computes the missing one
before a photo is searched, so a kill between storing a photo and embedding
it only delays the embedding.
"""

from lmid_tf.identification import database

PREDICTOR = 'landmark predictor'   # set_by of predicted landmarks


def ensure_embedding(cat: database.Catalogue, embedder, annotation_id: int,
                     read_photo):
  """The annotation's embedding under the embedder's model, computed (and
  stored) when missing. Landmarks: the annotation's own; when it has none
  and the model takes them, the predictor's (stored as 'predicted'). Returns
  the [D] vector, or None when the model needs landmarks nobody has given
  (the photo then waits on the Annotate page). `read_photo()` returns the
  photo's bytes; it is only called when there is something to compute."""
  found = database.embedding(cat, annotation_id, embedder.fingerprint)
  if found is not None:
    return found
  shown = database.annotation(cat, annotation_id)
  landmarks = shown['landmarks']
  count = embedder.preprocess.num_landmarks
  if count and landmarks is None:
    predicted, vector = embedder.predict(read_photo())
    if predicted is None:
      return None
    with cat.transaction():
      database.set_landmarks(cat, annotation_id, predicted.landmarks,
                             'predicted', PREDICTOR)
      database.set_embedding(cat, annotation_id, embedder.fingerprint, vector)
    return vector
  if count and len(landmarks) != count:
    raise database.InvalidInput(
        f'annotation {annotation_id} has {len(landmarks)} landmarks; the '
        f'model takes {count}: click them again on the Annotate page')
  vector = embedder.embed(read_photo(), landmarks or [])
  database.set_embedding(cat, annotation_id, embedder.fingerprint, vector)
  return vector


def backfill(catalogue_path: str, embedder, photo_bytes, log=print) -> int:
  """Embeds every annotation that has no embedding of this model yet
  (photos imported on the command line, or before a kill), then finds the
  nearest individual of each waiting photo for the queue. Returns how many
  it embedded."""
  from lmid_tf.identification import search   # pylint: disable=import-outside-toplevel
  done = 0
  with database.open(catalogue_path) as cat:
    missing = [r[0] for r in cat.execute(
        'SELECT a.id FROM annotations a WHERE NOT EXISTS (SELECT 1 FROM '
        'embeddings e WHERE e.annotation_id = a.id AND e.model = ?) ORDER '
        'BY a.id', (embedder.fingerprint,))]
    if missing:
      log(f'review: embedding {len(missing)} photos new to this model')
    for annotation_id in missing:
      shown = database.annotation(cat, annotation_id)
      try:
        photo = database.photo(cat, shown['photo_id'])
        if ensure_embedding(cat, embedder, annotation_id,
                            lambda: photo_bytes(cat, photo)) is not None:
          done += 1
      except (database.CatalogueError, OSError) as e:
        log(f'review: annotation {annotation_id} not embedded: {e}')
    search.refresh_nearest(cat, embedder.fingerprint)
  return done

"""A catalogue of known individuals: its file, ranking, calibration, verdicts.

The catalogue holds one embedding per catalogued photo with the photo's
identity, path, thumbnail and landmarks, a content fingerprint of the model
and gallery it was built from, and (once calibrated) the distance threshold
above which a photo is *possibly a new individual*. `lmid_tf.identify` builds
and queries it; `serving.client --gallery` ranks server embeddings with it.
"""

import dataclasses
import hashlib
import os
import zipfile

import numpy as np

from lmid_tf import files


@dataclasses.dataclass
class Catalogue:
  embeddings: np.ndarray        # [G, D]
  names: np.ndarray             # [G] identity names (str)
  paths: np.ndarray             # [G] source image paths
  thumbnails: np.ndarray        # [G, T, T, 3] uint8 BGR, as the model saw them
  landmarks: np.ndarray         # [G, K, 2] normalised, in the thumbnail
  visible: np.ndarray           # [G, K]
  fingerprint: str
  threshold: float = float('nan')   # nan until calibrated
  model: str = ''                   # model_fingerprint()


def _hash_paths(paths, digest):
  for path in sorted(paths):
    digest.update(os.path.abspath(path).encode())
    with open(path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)


def model_fingerprint(model_path: str) -> str:
  """Content hash of the model's files alone."""
  return fingerprint(model_path, [])


def fingerprint(model_path: str, gallery_files: list) -> str:
  """Content hash of the model's files and the gallery's files."""
  digest = hashlib.sha256()
  if os.path.isdir(model_path):
    model_files = [os.path.join(root, f) for root, _, files in
                   os.walk(model_path) for f in files]
  else:
    model_files = [model_path]
  _hash_paths(model_files, digest)
  digest.update(b'|gallery|')
  _hash_paths(gallery_files, digest)
  return digest.hexdigest()


def merge(old: Catalogue, new: Catalogue) -> tuple:
  """(old + the photos of `new` it does not hold yet, how many were
  skipped). The threshold is kept: it belongs to the model, which the
  caller has checked is the same."""
  for field in ('embeddings', 'thumbnails', 'landmarks'):
    a, b = getattr(old, field), getattr(new, field)
    if len(a) and len(b) and a.shape[1:] != b.shape[1:]:
      raise ValueError(f'cannot add: {field} of shape {b.shape[1:]} to a '
                       f'catalogue of {a.shape[1:]}; rebuild it with index '
                       '--force')
  # The same photo: same path as written, same identity, same embedding
  # (two CSVs may both name a different 'p0.png').
  fresh = np.ones(len(new.paths), bool)
  for i, (path, name) in enumerate(zip(new.paths.astype(str),
                                       new.names.astype(str))):
    same = (old.paths.astype(str) == path) & (old.names.astype(str) == name)
    fresh[i] = not any(np.allclose(e, new.embeddings[i], atol=1e-5)
                       for e in old.embeddings[same])
  joined = {f: np.concatenate([getattr(old, f), getattr(new, f)[fresh]])
            for f in ('embeddings', 'names', 'paths', 'thumbnails',
                      'landmarks', 'visible')}
  digest = hashlib.sha256(f'{old.fingerprint}+{new.fingerprint}'.encode())
  return Catalogue(**joined, fingerprint=digest.hexdigest(),
                   threshold=old.threshold, model=old.model), int(
                       (~fresh).sum())


def _remove_stale_temporaries(path: str) -> None:
  """Temporary files of writers that were killed before their rename."""
  folder = os.path.dirname(os.path.abspath(path))
  prefix = os.path.basename(path) + '.tmp-'
  for name in os.listdir(folder):
    pid = name[len(prefix):].split('.')[0]
    if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
      os.remove(os.path.join(folder, name))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def save(path: str, catalogue: Catalogue) -> None:
  """Writes to a temporary name, then renames: a reader (or a kill) never
  sees half a catalogue, and the previous one stays until the new is whole."""
  _remove_stale_temporaries(path)
  with files.replacing(path, '.npz') as tmp:
    np.savez_compressed(tmp, **dataclasses.asdict(catalogue))


def load(path: str) -> Catalogue:
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no catalogue; build one with '
                            '`python -m lmid_tf.identify index`')
  try:
    with np.load(path, allow_pickle=False) as data:
      fields = {f.name: data[f.name] for f in dataclasses.fields(Catalogue)}
  except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'{path}: not a catalogue written by this version of '
                     f'lmid_tf.identify ({e}); rebuild it with `identify '
                     'index --force`') from None
  fields['fingerprint'] = str(fields['fingerprint'])
  fields['threshold'] = float(fields['threshold'])
  fields['model'] = str(fields['model'])
  return Catalogue(**fields)


def rank_identities(embedding: np.ndarray, catalogue: Catalogue,
                    top_k: int = 5) -> list:
  """[(identity, distance, catalogue index)] best first, one per identity
  (each identity is as near as its nearest catalogued photo)."""
  distances = np.linalg.norm(catalogue.embeddings - embedding[None], axis=1)
  best = {}
  for g in np.argsort(distances, kind='stable'):
    name = str(catalogue.names[g])
    if name not in best:
      best[name] = (float(distances[g]), int(g))
      if len(best) == top_k:
        break
  return [(name, d, g) for name, (d, g) in best.items()]


def calibrate_threshold(known_nearest: np.ndarray, new_nearest: np.ndarray,
                        target_fpr: float = 0.05) -> dict:
  """Threshold on nearest distance above which a query is "new".

  Args:
    known_nearest: nearest distances of queries whose individual is known.
    new_nearest: nearest distances of queries whose individual is not in the
      catalogue.
    target_fpr: accepted share of known individuals flagged as new.

  Returns:
    {'threshold', 'false_positive_rate' (known flagged new),
     'true_positive_rate' (new flagged new), 'known', 'new'}
  """
  known = np.sort(np.asarray(known_nearest, np.float64))
  new = np.asarray(new_nearest, np.float64)
  if not len(known) or not len(new):
    raise ValueError('calibration needs known and new queries')
  # The smallest threshold that flags at most target_fpr of known queries.
  allowed = int(np.floor(target_fpr * len(known)))
  threshold = float(known[len(known) - 1 - allowed])
  return {'threshold': threshold,
          'false_positive_rate': float(np.mean(known > threshold)),
          'true_positive_rate': float(np.mean(new > threshold)),
          'target_fpr': target_fpr, 'known': int(len(known)),
          'new': int(len(new))}


def verdict(matches: list, threshold: float) -> dict:
  """What a reviewer is told about one photo.

  Returns:
    {'verdict': 'known' | 'new' | 'uncalibrated' | 'empty',
     'identity': the nearest identity (or None), 'nearest': its distance,
     'threshold', 'text': one line, e.g. "known: id00060" or
     "new individual? nearest 0.910 > threshold 0.790"}
  """
  if not matches:
    return {'verdict': 'empty', 'identity': None, 'nearest': None,
            'threshold': threshold, 'text': 'the catalogue is empty'}
  name, nearest, _ = matches[0]
  result = {'identity': name, 'nearest': nearest,
            'threshold': threshold if np.isfinite(threshold) else None}
  if not np.isfinite(threshold):
    result.update(verdict='uncalibrated', text=(
        f'nearest: {name} (distance {nearest:.3f}; no threshold yet, run '
        '`identify calibrate` for a known / new verdict)'))
  elif nearest > threshold:
    result.update(verdict='new', text=(
        f'new individual? nearest {nearest:.3f} > threshold {threshold:.3f} '
        f'(closest: {name})'))
  else:
    result.update(verdict='known', text=(
        f'known: {name} (distance {nearest:.3f} <= threshold '
        f'{threshold:.3f})'))
  return result


def not_found_record(photo: str, confidence, threshold: float) -> dict:
  """The record of a photo in which the landmark predictor found nothing:
  no match is offered rather than a confident wrong one."""
  best = float(np.max(confidence)) if np.size(confidence) else 0.0
  return {'photo': photo, 'verdict': 'not_found', 'identity': None,
          'nearest': None,
          'threshold': threshold if np.isfinite(threshold) else None,
          'text': f'landmarks not found (highest confidence {best:.2f}): no '
                  'animal in the photo? Click its landmarks and pass '
                  '--landmarks', 'matches': []}


def match_record(photo: str, matches: list, catalogue: Catalogue) -> dict:
  """One photo's verdict and ranked candidates, as JSON-ready values."""
  record = {'photo': photo}
  record.update(verdict(matches, catalogue.threshold))
  record['matches'] = [
      {'rank': rank, 'identity': name, 'distance': distance,
       'catalogue_photo': str(catalogue.paths[g])}
      for rank, (name, distance, g) in enumerate(matches, 1)]
  return record


def format_record(record: dict) -> str:
  lines = [f'{record["photo"]}: {record["text"]}']
  for match in record['matches']:
    lines.append(f'  {match["rank"]}. {match["identity"]}  distance '
                 f'{match["distance"]:.3f}  ({match["catalogue_photo"]})')
  return '\n'.join(lines)

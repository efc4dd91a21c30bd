"""The split protocol, with encounters kept whole.

The paper's protocol for real data (§4.1.2): test identities are disjoint
from train; of each test identity, `gallery_per_identity` go to the gallery
and the rest are queries; the gallery also holds the whole train split.

Photos of one encounter (same place, same time) share a background and the
animal's pose, so a query whose encounter is also in the gallery can be
matched on the background. Here the gallery picks are *encounters*: all of
an identity's photos of one encounter go to the same side. A photo with no
encounter is an encounter of its own (the protocol above, photo by photo).
"""

from typing import Sequence

import numpy as np

TEST = 'test'   # a given split (folder or column): gallery + query by protocol
GIVEN = ('train', 'gallery', 'query', TEST)


def encounter_keys(encounters: Sequence[str]) -> list:
  """One key per photo: its encounter, or a key of its own when it has
  none."""
  return [e if e else ('', i) for i, e in enumerate(encounters)]


def split_test_identity(encounters: Sequence[str], gallery_per_identity: int,
                        rng: np.random.Generator) -> list:
  """'gallery' / 'query' per photo of one test identity: the photos of
  `gallery_per_identity` encounters drawn at random, the rest queries."""
  keys = encounter_keys(encounters)
  unique = list(dict.fromkeys(keys))
  picked = {unique[i] for i in rng.permutation(len(unique))[
      :gallery_per_identity]}
  return ['gallery' if key in picked else 'query' for key in keys]


def can_be_test(encounters: Sequence[str], gallery_per_identity: int) -> bool:
  """An identity can be a test identity when a query encounter is left after
  the gallery picks."""
  return len(set(encounter_keys(encounters))) > gallery_per_identity


def assign(identities: dict, test_fraction: float, gallery_per_identity: int,
           seed: int) -> dict:
  """identity -> [split per photo], photos given as identity -> [encounter
  per photo] ('' = unknown)."""
  rng = np.random.default_rng(seed)
  names = sorted(identities)
  eligible = [n for n in names
              if can_be_test(identities[n], gallery_per_identity)]
  num_test = min(int(round(test_fraction * len(names))), len(eligible))
  test = set(rng.choice(eligible, size=num_test, replace=False).tolist()) if (
      num_test) else set()
  return {name: (split_test_identity(identities[name], gallery_per_identity,
                                     rng)
                 if name in test else ['train'] * len(identities[name]))
          for name in names}


def resolve_given(identities: dict, given: dict, gallery_per_identity: int,
                  seed: int) -> dict:
  """Given splits (folders or a column: train / gallery / query / test) ->
  identity -> [split per photo]. 'test' photos are split into gallery and
  query by the protocol; the others are taken as they are.

  Args:
    identities: identity -> [encounter per photo]; given: identity ->
      [given split per photo].
  """
  rng = np.random.default_rng(seed)
  out = {}
  for name in sorted(identities):
    splits = list(given[name])
    test = [i for i, s in enumerate(splits) if s == TEST]
    if test:
      drawn = split_test_identity([identities[name][i] for i in test],
                                  gallery_per_identity, rng)
      for i, split in zip(test, drawn):
        splits[i] = split
    out[name] = splits
  return out


def one_photo_encounters(paths: Sequence[str],
                         encounters: Sequence[str]) -> list:
  """The named encounters that hold a single photo (they cannot put a pair
  on one side, which may be a typing error in the encounter column)."""
  photos = {}
  for path, encounter in zip(paths, encounters):
    if encounter:
      photos.setdefault(encounter, set()).add(path)
  return sorted(e for e, p in photos.items() if len(p) == 1)


def arrange(by_identity: dict, splits: dict, explicit_gallery: bool) -> tuple:
  """Items per split, and whether the gallery holds the whole train split.

  The gallery holds the train split (stored once, listed twice) unless a
  gallery was given (a gallery/ folder or 'gallery' in the split column):
  that gallery is then exactly what was given. Given a gallery and no train
  split, the gallery's photos are also the train split.

  Args:
    by_identity: identity -> [item]; splits: identity -> [split per item].

  Returns:
    ({'train': [...], 'gallery': [...], 'query': [...]} in identity order
    (the gallery's train part excluded when shared), shares_train).
  """
  per_split = {'train': [], 'gallery': [], 'query': []}
  for name in sorted(by_identity):
    for item, split in zip(by_identity[name], splits[name]):
      per_split[split].append(item)
  if not explicit_gallery:
    return per_split, True
  if not per_split['train']:
    per_split['train'], per_split['gallery'] = per_split['gallery'], []
    return per_split, True
  return per_split, False


def of_items(annotations: dict, given: bool, test_fraction: float,
             gallery_per_identity: int, seed: int) -> dict:
  """identity -> [split per photo] of identity -> [annotations.Annotation]:
  their given splits (`given`), resolved, or the protocol's.

  Raises ValueError naming the first row whose given split is unknown."""
  encounters = {n: [a.encounter for a in rows]
                for n, rows in annotations.items()}
  if not given:
    return assign(encounters, test_fraction, gallery_per_identity, seed)
  for rows in annotations.values():
    for row in rows:
      if row.split not in GIVEN:
        raise ValueError(f'{row.where}: split {row.split!r} is not one of '
                         f'{GIVEN}')
  return resolve_given(encounters, {n: [a.split for a in rows]
                                    for n, rows in annotations.items()},
                       gallery_per_identity, seed)

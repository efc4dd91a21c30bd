"""Retrieval metrics: distances, and CMC, mAP and mINP from one sort.

Queries with no gallery image of their identity are left out (they cannot be
matched), as in the standard re-identification protocol. A gallery image at
infinite distance is out of that query's ranking (restrict_to_viewpoint).
"""

import numpy as np


def distance_matrix(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
  """[Q, D], [G, D] -> [Q, G] Euclidean distances."""
  # In float64: the expansion below cancels large norms, and in float32 that
  # cancellation errs by ~1e-4 on near-duplicate pairs (a 4 % error at 0.002).
  query, gallery = query.astype(np.float64), gallery.astype(np.float64)
  d2 = (np.sum(query ** 2, 1)[:, None] + np.sum(gallery ** 2, 1)[None, :]
        - 2 * query @ gallery.T)
  return np.sqrt(np.maximum(d2, 0))


def ranked_matches(distances: np.ndarray, query_labels, gallery_labels
                   ) -> np.ndarray:
  """[Q, G] bool: is the r-th nearest gallery image the query's identity
  (never, for an image at infinite distance: it is out of the ranking)."""
  order = np.argsort(distances, axis=1, kind='stable')
  return ((np.asarray(gallery_labels)[order]
           == np.asarray(query_labels)[:, None])
          & np.isfinite(np.take_along_axis(distances, order, axis=1)))


def restrict_to_viewpoint(distances: np.ndarray, query_viewpoints,
                          gallery_viewpoints) -> np.ndarray:
  """[Q, G] distances with every pair of different viewpoints set to
  infinity: each query is ranked only against its own viewpoint (a nyala's
  left flank against left flanks; its right flank carries other stripes). A
  photo whose viewpoint is unknown (b'') is compared with every viewpoint."""
  query_viewpoints = np.asarray(query_viewpoints)[:, None]
  gallery_viewpoints = np.asarray(gallery_viewpoints)[None, :]
  same = ((query_viewpoints == gallery_viewpoints)
          | (query_viewpoints == b'') | (gallery_viewpoints == b''))
  return np.where(same, distances, np.inf)


def ranking_metrics(distances: np.ndarray, query_labels, gallery_labels,
                    max_rank: int = 10) -> dict:
  """{'cmc' [max_rank] (cmc[r-1] = top-r accuracy), 'mAP', 'mINP',
  'queries' (the number evaluated)}.

  mINP (Ye et al., 2021) is, per query, |positives| / rank of the last
  positive: how much of the ranking a person must check to find *every*
  image of the individual, which top-1 and mAP hide.
  """
  matches = ranked_matches(distances, query_labels, gallery_labels)
  matches = matches[matches.any(axis=1)]
  if not len(matches):
    return {'cmc': np.zeros(max_rank), 'mAP': 0.0, 'mINP': 0.0, 'queries': 0}
  first_hit = matches.argmax(axis=1)
  cmc = np.array([(first_hit < r).mean() for r in range(1, max_rank + 1)])
  hits = np.cumsum(matches, axis=1)
  precision = hits / np.arange(1, matches.shape[1] + 1)
  positives = matches.sum(axis=1)
  average_precision = (precision * matches).sum(1) / positives
  last = matches.shape[1] - np.argmax(matches[:, ::-1], axis=1)
  return {'cmc': cmc, 'mAP': float(average_precision.mean()),
          'mINP': float(np.mean(positives / last)),
          'queries': int(len(matches))}


def summary(distances: np.ndarray, query_labels, gallery_labels) -> dict:
  """The metrics a results.json holds: top1/5/10, mAP, mINP, counts, cmc."""
  ranked = ranking_metrics(distances, query_labels, gallery_labels)
  cmc = ranked['cmc']
  return {'top1': float(cmc[0]), 'top5': float(cmc[4]),
          'top10': float(cmc[9]), 'mAP': ranked['mAP'],
          'mINP': ranked['mINP'], 'queries': ranked['queries'],
          'gallery': int(len(gallery_labels)),
          'cmc': [float(c) for c in cmc]}


def visible_count_groups(num_landmarks: int) -> tuple:
  """((name, lowest, highest), ...): all landmarks visible, one missing, and
  two or more missing; for five landmarks '5', '4', '<=3' (the paper's
  §4.1.2 mix of about 50 / 30 / 20 %)."""
  return ((str(num_landmarks), num_landmarks, num_landmarks),
          (str(num_landmarks - 1), num_landmarks - 1, num_landmarks - 1),
          (f'<={num_landmarks - 2}', 0, num_landmarks - 2))


def by_visible_count(distances: np.ndarray, query_labels, gallery_labels,
                     query_visible, groups=None) -> dict:
  """{group name: {'top1', 'top5', 'mAP', 'mINP', 'queries'}}: the queries
  grouped by how many of their landmarks are visible, each group ranked
  against the whole gallery.

  query_visible: [Q, K] (1 = visible); groups: visible_count_groups(K) by
  default. A query whose identity the gallery lacks is left out of its group
  (ranking_metrics); an empty group reports 0 queries and zeros.
  """
  query_visible = np.asarray(query_visible)
  counts = np.round(query_visible.sum(axis=1)).astype(int)
  query_labels = np.asarray(query_labels)
  result = {}
  for name, lowest, highest in groups or visible_count_groups(
      query_visible.shape[1]):
    rows = (counts >= lowest) & (counts <= highest)
    ranked = ranking_metrics(distances[rows], query_labels[rows],
                             gallery_labels, max_rank=5)
    result[name] = {'top1': float(ranked['cmc'][0]),
                    'top5': float(ranked['cmc'][4]), 'mAP': ranked['mAP'],
                    'mINP': ranked['mINP'], 'queries': ranked['queries']}
  return result


def format_results(metrics: dict) -> str:
  return (f'top-1 {100 * metrics["top1"]:.2f}%  top-5 '
          f'{100 * metrics["top5"]:.2f}%  top-10 {100 * metrics["top10"]:.2f}%'
          f'  mAP {100 * metrics["mAP"]:.2f}%  mINP {100 * metrics["mINP"]:.2f}%'
          f'  ({metrics["queries"]} queries, '
          f'{metrics["gallery"]} gallery images)')

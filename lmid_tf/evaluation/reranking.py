"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), for evaluation.

Two images are likely the same individual when each is among the other's k
nearest neighbours. Each image gets a vector over all images (query and
gallery): weights on its k-reciprocal neighbours, expanded by neighbours'
own reciprocal sets and smoothed over its k2 nearest. The final distance
mixes the Jaccard distance of those vectors with the original distance:

  d* = (1 - lambda) * d_Jaccard + lambda * d_original

Off by default (`evaluate --rerank`): it costs O(N^2) memory for N = queries
+ gallery images, and helps most when the gallery holds several images per
individual.
"""

import numpy as np


def k_reciprocal(query_gallery: np.ndarray, query_query: np.ndarray,
                 gallery_gallery: np.ndarray, k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3) -> np.ndarray:
  """Re-ranked [Q, G] distances from Euclidean ones.

  Args:
    query_gallery: [Q, G]; query_query: [Q, Q]; gallery_gallery: [G, G]
      distances (Euclidean; they are squared and scaled per column as in
      the paper's code).
  """
  num_query = query_gallery.shape[0]
  distances = np.block([[query_query, query_gallery],
                        [query_gallery.T, gallery_gallery]]).astype(np.float32)
  distances = np.square(distances)
  distances /= np.maximum(distances.max(axis=0, keepdims=True), 1e-12)
  total = distances.shape[0]
  rank = np.argsort(distances, axis=1, kind='stable')
  weights = np.zeros_like(distances)
  half = int(round(k1 / 2))

  def reciprocal(index, k):
    forward = rank[index, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[np.any(backward == index, axis=1)]

  for i in range(total):
    neighbours = reciprocal(i, k1)
    expansion = [neighbours]
    for candidate in neighbours:
      candidates = reciprocal(candidate, half)
      if len(np.intersect1d(candidates, neighbours)) > 2 / 3 * len(
          candidates):
        expansion.append(candidates)
    expansion = np.unique(np.concatenate(expansion))
    weight = np.exp(-distances[i, expansion])
    weights[i, expansion] = weight / weight.sum()
  if k2 > 1:
    # Local query expansion: average over each image's k2 nearest.
    weights = np.stack([weights[rank[i, :k2]].mean(axis=0)
                        for i in range(total)])
  # Jaccard distance from the sum over images of min(weights).
  columns = [np.flatnonzero(weights[:, j]) for j in range(total)]
  jaccard = np.zeros((num_query, total), np.float32)
  for i in range(num_query):
    shared = np.zeros(total, np.float32)
    for j in np.flatnonzero(weights[i]):
      others = columns[j]
      shared[others] += np.minimum(weights[i, j], weights[others, j])
    jaccard[i] = 1 - shared / (2 - shared)
  final = (1 - lambda_value) * jaccard + lambda_value * distances[:num_query]
  return final[:, num_query:]

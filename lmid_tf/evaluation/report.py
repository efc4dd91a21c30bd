"""Pictures of a ranking for people: the CMC curve and a ranked sheet."""

import cv2
import numpy as np

from lmid_tf import files
from lmid_tf.data import overlay


def plot_cmc(cmc, path: str, title: str = '') -> None:
  cmc = np.asarray(cmc)
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  figure, axes = plt.subplots(figsize=(5, 3.5), dpi=100)
  ranks = np.arange(1, len(cmc) + 1)
  axes.plot(ranks, 100 * cmc, marker='o')
  for r in (1, 5, 10):
    if r <= len(cmc):
      axes.annotate(f'{100 * cmc[r - 1]:.1f}%', (r, 100 * cmc[r - 1]),
                    textcoords='offset points', xytext=(0, 6), ha='center')
  axes.set(xlabel='rank', ylabel='identification rate (%)', ylim=(0, 105),
           xticks=ranks, title=title or 'CMC')
  axes.grid(alpha=0.3)
  figure.tight_layout()
  with files.replacing(path, '.png') as tmp:
    figure.savefig(tmp)
  plt.close(figure)


def _tile(image, landmarks, visible, colour=None, scale=2):
  tile = overlay.colourise(image.astype(np.float32) / 255.0)
  tile = cv2.resize(tile, None, fx=scale, fy=scale,
                    interpolation=cv2.INTER_NEAREST)
  tile = overlay.draw_landmarks(tile, landmarks, visible, radius=2 * scale)
  if colour is not None:
    cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1),
                  colour, 3)
  return tile


def ranked_sheet(query: dict, gallery: dict, distances, num_queries: int = 8,
                 top: int = 5, seed: int = 0) -> np.ndarray:
  """Rows: a query, then its `top` nearest gallery images framed green (same
  identity) or red (different)."""
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(distances), size=min(num_queries, len(distances)),
                     replace=False)
  tiles = []
  for q in sorted(picks):
    tiles.append(_tile(query['images'][q], query['landmarks'][q],
                       query['visible'][q], colour=(128, 128, 128)))
    for g in np.argsort(distances[q], kind='stable')[:top]:
      same = gallery['labels'][g] == query['labels'][q]
      tiles.append(_tile(gallery['images'][g], gallery['landmarks'][g],
                         gallery['visible'][g],
                         colour=(0, 180, 0) if same else (0, 0, 230)))
  return overlay.grid(tiles, top + 1)

"""Pictures of model inputs: images with coloured heatmaps and landmark dots."""


import cv2
import numpy as np

from lmid_tf import files

# BGR colours for landmark channels, repeated when there are more.
COLOURS = np.array([(0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 200, 255),
                    (255, 0, 255), (255, 255, 0)], np.float32) / 255.0


def colourise(image: np.ndarray, heatmaps: np.ndarray = None,
              alpha: float = 0.6) -> np.ndarray:
  """[H, W, C] image in [0, 1] (+ [H, W, K] heatmaps) -> [H, W, 3] uint8 BGR."""
  image = np.asarray(image, np.float32)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  else:
    image = image[..., ::-1]  # RGB -> BGR for cv2
  if heatmaps is not None:
    for k in range(heatmaps.shape[-1]):
      weight = alpha * heatmaps[..., k:k + 1]
      image = image * (1 - weight) + COLOURS[k % len(COLOURS)] * weight
  return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray,
                   visible: np.ndarray, radius: int = 3) -> np.ndarray:
  """Draws normalised landmarks [K, 2] as dots on a BGR uint8 image."""
  h, w = image.shape[:2]
  image = image.copy()
  for k, ((x, y), vis) in enumerate(zip(landmarks, visible)):
    if vis:
      colour = tuple(int(c) for c in COLOURS[k % len(COLOURS)] * 255)
      cv2.circle(image, (int(x * w), int(y * h)), radius, colour, -1,
                 cv2.LINE_AA)
  return image


def grid(tiles: list, columns: int, border: int = 2) -> np.ndarray:
  """Lays equally sized [H, W, 3] tiles out in rows, white borders."""
  tiles = [cv2.copyMakeBorder(t, border, border, border, border,
                              cv2.BORDER_CONSTANT, value=(255, 255, 255))
           for t in tiles]
  blank = np.full_like(tiles[0], 255)
  while len(tiles) % columns:
    tiles.append(blank)
  rows = [np.concatenate(tiles[i:i + columns], axis=1)
          for i in range(0, len(tiles), columns)]
  return np.concatenate(rows, axis=0)


def write_png(path: str, image: np.ndarray) -> None:
  """Writes via a temporary name so a reader never sees half a file."""
  ok, data = cv2.imencode('.png', image)
  if not ok:
    raise ValueError(f'cannot encode an image of shape {image.shape}')
  files.write_bytes(path, data.tobytes())

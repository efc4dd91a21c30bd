"""An underwater scene seen from below: surface water, light, occluders.

What surrounds the animal in data_tools/manta.py's photos: bright surface
water with god rays and caustics behind it, and fish, bubbles and marine
snow between it and the camera. Sizes are fractions of the image side.
"""

import math

import cv2
import numpy as np

from data_tools import synthetic


def background(rng: np.random.Generator, size: int) -> tuple:
  """Surface water seen from below: light towards the surface, god rays,
  caustics: (RGB [S, S, 3], the water's mean colour [3])."""
  shallow = rng.uniform([0.45, 0.72, 0.82], [0.75, 0.92, 0.98])
  deep = rng.uniform([0.02, 0.18, 0.32], [0.12, 0.36, 0.52])
  angle = rng.uniform(0, 2 * math.pi)
  ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
  ramp = np.clip(0.5 + rng.uniform(0.6, 1.4) * (
      xs * math.cos(angle) + ys * math.sin(angle)), 0, 1)
  # Rays fan out from a point beyond the shallow edge of the frame.
  sx, sy = 0.5 + 1.2 * math.cos(angle), 0.5 + 1.2 * math.sin(angle)
  fan = np.arctan2(ys + 0.5 - sy, xs + 0.5 - sx)
  phases = rng.uniform(0, 2 * math.pi, 3)
  rays = sum(np.cos(f * fan * 7 + p) for f, p in zip((1, 2.3, 4.1), phases))
  rays = np.clip(rays / 3, 0, 1) ** 2 * ramp
  caustic = np.abs(synthetic.noise_texture(rng, size, 4) - 0.5) * 2
  light = np.clip(ramp + 0.25 * rays + 0.1 * (caustic - 0.5), 0, 1)
  water = deep + (shallow - deep) * light[..., None]
  return water.astype(np.float32), (shallow + deep) / 2


def occluders(rng: np.random.Generator, size: int, fish_rate: float,
              bubble_probability: float) -> tuple:
  """Fish (Poisson, mean `fish_rate`), a column of rising bubbles (with
  `bubble_probability`) and marine snow in front of the animal:
  (premultiplied RGB [S, S, 3], alpha [S, S]); alpha > 0.5 over a landmark
  hides it."""
  colour = np.zeros((size, size, 3), np.float32)
  alpha = np.zeros((size, size), np.float32)

  def paint(mask, rgb, opacity):
    nonlocal colour, alpha
    a = mask * opacity
    colour = colour * (1 - a[..., None]) + np.asarray(rgb) * a[..., None]
    alpha = alpha + a * (1 - alpha)

  for _ in range(rng.poisson(fish_rate)):
    layer = np.zeros((size, size), np.float32)
    length = rng.uniform(0.06, 0.16) * size
    centre = rng.uniform(0.05, 0.95, 2) * size
    heading = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading)])
    cv2.ellipse(layer, (int(centre[0] * 16), int(centre[1] * 16)),
                (int(length * 8), int(length * 0.18 * 16)),
                math.degrees(heading), 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    back = centre - direction * length * 0.5
    side = np.array([-direction[1], direction[0]]) * length * 0.2
    tail = np.array([back, back - direction * length * 0.25 + side,
                     back - direction * length * 0.25 - side])
    cv2.fillPoly(layer, [np.round(tail * 16).astype(np.int32)], 1.0,
                 cv2.LINE_AA, 4)
    tone = rng.uniform(0.25, 0.75)
    paint(layer, (tone * 0.8, tone * 0.9, tone), 1.0)
  if rng.random() < bubble_probability:
    x = rng.uniform(0.1, 0.9) * size
    for y in np.sort(rng.uniform(0, 1, rng.integers(5, 20))) * size:
      radius = rng.uniform(0.005, 0.025) * size
      x += rng.normal(0, radius)
      fill, rim = np.zeros((2, size, size), np.float32)
      cv2.circle(fill, (int(x * 16), int(y * 16)), int(radius * 16), 1.0, -1,
                 cv2.LINE_AA, 4)
      cv2.circle(rim, (int(x * 16), int(y * 16)), int(radius * 16), 1.0,
                 max(1, int(radius / 3)), cv2.LINE_AA, 4)
      paint(fill, (0.85, 0.95, 1.0), 0.35)
      paint(rim, (0.95, 1.0, 1.0), 0.8)
  snow = np.zeros((size, size), np.float32)
  for x, y in rng.uniform(0, size, (rng.integers(10, 60), 2)):
    cv2.circle(snow, (int(x * 16), int(y * 16)), int(rng.uniform(0.3, 1.0)
                                                     * size / 128 * 16),
               1.0, -1, cv2.LINE_AA, 4)
  paint(snow, (0.9, 0.95, 0.95), 0.5)
  return colour, alpha

"""Synthetic identities of the paper's §4.1.1: ellipse patterns in a triangle.

An identity is a seed pattern: dark filled ellipses placed inside a triangle
in a canonical (frontal) view. The triangle itself is never drawn: its three
corners are the body landmarks, so the image alone does not say where they
are. An example is the pattern under a random homography (the camera moving
around a planar body) composited onto a lighter random background.

All coordinates here are continuous pixel coordinates: (0, 0) is the top-left
corner of the image, pixel (i, j) covers [j, j+1) x [i, i+1).
"""

import dataclasses
import math

import cv2
import numpy as np

LANDMARK_NAMES = ('apex', 'base_left', 'base_right')
# Triangle corners in the canonical view, as fractions of the image size.
CANONICAL_CORNERS = np.array([[0.5, 0.18], [0.18, 0.78], [0.82, 0.78]])


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  size: int = 128
  min_ellipses: int = 3
  max_ellipses: int = 7
  min_axis: float = 0.025       # ellipse semi-axis, fraction of size
  max_axis: float = 0.08
  min_scale: float = 0.6        # similarity part of the homography
  max_scale: float = 0.9
  max_translation: float = 0.08 # fraction of size
  perspective: float = 0.06     # max corner jitter, fraction of size
  noise_std: float = 0.03       # Gaussian noise on [0, 1] intensities
  background_range: tuple = (0.55, 0.95)
  pattern_range: tuple = (0.0, 0.4)
  # The hard variant (make_synthetic --variant=hard): a body is not a rigid
  # plane, parts of it hide, light is uneven. 0 turns each off.
  elastic: float = 0.0          # max non-rigid displacement, fraction of size
  occlusion: float = 0.0        # max occluder radius, fraction of size
  lighting: float = 0.0         # max relative brightness change across image
  # The visible-body variant (--variant=body): the body is drawn, a
  # textured silhouette this much lighter or darker than the background, so
  # its landmarks can be found in the image, as an eye or a fin can on a
  # real animal. 0 leaves the body invisible (the paper).
  body: float = 0.0
  # Radius of the round head drawn around the apex, fraction of size. The
  # triangle alone is nearly equilateral (angles 56/62/62 degrees), so which
  # corner is which would be undefined, as it never is on an animal.
  head: float = 0.09


HARD = dict(elastic=0.04, occlusion=0.22, lighting=0.5)
BODY = dict(body=0.18, occlusion=0.15)


@dataclasses.dataclass(frozen=True)
class Ellipse:
  cx: float
  cy: float
  ax: float
  ay: float
  angle: float  # degrees


def seed_pattern(rng: np.random.Generator, cfg: SynthConfig) -> list:
  """A unique set of ellipses inside the canonical triangle (canonical px)."""
  corners = CANONICAL_CORNERS * cfg.size
  n = rng.integers(cfg.min_ellipses, cfg.max_ellipses + 1)
  ellipses = []
  for _ in range(n):
    # Uniform point in the triangle, pulled 15 % towards the centroid so the
    # ellipses stay inside it.
    u, v = rng.random(2)
    if u + v > 1:
      u, v = 1 - u, 1 - v
    point = corners[0] + u * (corners[1] - corners[0]) + v * (
        corners[2] - corners[0])
    point = 0.85 * point + 0.15 * corners.mean(axis=0)
    ax, ay = rng.uniform(cfg.min_axis, cfg.max_axis, size=2) * cfg.size
    ellipses.append(Ellipse(point[0], point[1], ax, ay, rng.uniform(0, 180)))
  return ellipses


def pattern_mask(ellipses: list, size: int) -> np.ndarray:
  """[size, size] float32 in [0, 1], 1 inside the ellipses (antialiased)."""
  shift = 4  # cv2 draws with fixed-point sub-pixel precision of 2**shift
  scale = 1 << shift
  mask = np.zeros((size, size), np.uint8)
  for e in ellipses:
    # cv2 puts pixel centres at integer coordinates: continuous - 0.5.
    center = (round((e.cx - 0.5) * scale), round((e.cy - 0.5) * scale))
    axes = (round(e.ax * scale), round(e.ay * scale))
    cv2.ellipse(mask, center, axes, e.angle, 0, 360, 255, -1, cv2.LINE_AA,
                shift)
  return mask.astype(np.float32) / 255.0


def body_mask(size: int, head: float) -> np.ndarray:
  """[size, size] float32 silhouette in the canonical view: the landmark
  triangle plus a disc of radius `head` (fraction of size) at the apex."""
  shift = 4
  scale = 1 << shift
  mask = np.zeros((size, size), np.uint8)
  corners = np.round((CANONICAL_CORNERS * size - 0.5) * scale).astype(np.int32)
  cv2.fillPoly(mask, [corners], 255, cv2.LINE_AA, shift)
  cv2.circle(mask, tuple(int(c) for c in corners[0]),
             round(head * size * scale), 255, -1, cv2.LINE_AA, shift)
  return mask.astype(np.float32) / 255.0


def random_homography(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
  """A 3x3 canonical -> image homography in continuous coordinates.

  A random similarity (any rotation, scale, translation) about the image
  centre, then each image corner moved independently for perspective.
  """
  s = cfg.size
  square = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float64)
  angle = rng.uniform(0, 2 * math.pi)
  scale = rng.uniform(cfg.min_scale, cfg.max_scale)
  shift = rng.uniform(-cfg.max_translation, cfg.max_translation, 2) * s
  rot = np.array([[math.cos(angle), -math.sin(angle)],
                  [math.sin(angle), math.cos(angle)]])
  centre = np.array([s / 2, s / 2])
  moved = (square - centre) @ rot.T * scale + centre + shift
  moved += rng.uniform(-cfg.perspective, cfg.perspective, (4, 2)) * s
  return cv2.getPerspectiveTransform(square.astype(np.float32),
                                     moved.astype(np.float32)).astype(np.float64)


def warp_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
  """[N, 2] continuous points -> [N, 2] points under the homography."""
  ones = np.ones((len(points), 1))
  mapped = np.concatenate([points, ones], axis=1) @ homography.T
  return mapped[:, :2] / mapped[:, 2:3]


def warp_image(image: np.ndarray, homography: np.ndarray, size: int,
               border_value: float = 0.0) -> np.ndarray:
  """Warps a float image with a continuous-coordinate homography."""
  # cv2 works in pixel-centre coordinates (continuous - 0.5).
  to_centres = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
  from_centres = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
  h = to_centres @ homography @ from_centres
  return cv2.warpPerspective(image, h, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT,
                             borderValue=border_value)


def noise_texture(rng: np.random.Generator, size: int,
                  octaves: int = 5) -> np.ndarray:
  """Multi-octave value noise in [0, 1]: a stand-in for underwater photos."""
  texture = np.zeros((size, size), np.float32)
  amplitude, total = 1.0, 0.0
  for octave in range(octaves):
    cells = 2 ** (octave + 1)
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    texture += amplitude * cv2.resize(grid, (size, size),
                                      interpolation=cv2.INTER_CUBIC)
    total += amplitude
    amplitude *= 0.55
  texture /= total
  lo, hi = texture.min(), texture.max()
  return (texture - lo) / max(hi - lo, 1e-6)


def photo_texture(rng: np.random.Generator, photo: np.ndarray,
                  size: int) -> np.ndarray:
  """A random square crop of a grayscale photo, resized, in [0, 1]."""
  h, w = photo.shape[:2]
  side = rng.integers(max(8, min(h, w) // 3), min(h, w) + 1)
  y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
  crop = cv2.resize(photo[y:y + side, x:x + side].astype(np.float32),
                    (size, size), interpolation=cv2.INTER_AREA)
  lo, hi = crop.min(), crop.max()
  return (crop - lo) / max(hi - lo, 1e-6)


def rescale(texture: np.ndarray, value_range: tuple) -> np.ndarray:
  lo, hi = value_range
  return lo + (hi - lo) * texture


def elastic_field(rng: np.random.Generator, size: int, amplitude: float,
                  cells: int = 4) -> tuple:
  """A smooth random displacement field (x, y), each [size, size] pixels,
  at most `amplitude` pixels: bicubic upsampling of a coarse random grid."""
  fields = []
  for _ in range(2):
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    fields.append(amplitude * np.clip(cv2.resize(
        grid, (size, size), interpolation=cv2.INTER_CUBIC), -1, 1))
  return tuple(fields)


def deform(image: np.ndarray, field: tuple) -> np.ndarray:
  """Moves the content of `image` by the displacement field."""
  size = image.shape[0]
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
  return cv2.remap(image, xs + field[0], ys + field[1], cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def occluder(rng: np.random.Generator, landmarks: np.ndarray, size: int,
             max_radius: float) -> np.ndarray:
  """[size, size] float mask of an ellipse hiding part of the body: centred
  at a random point of the landmark triangle."""
  weights = rng.dirichlet([1.0, 1.0, 1.0])
  cx, cy = weights @ landmarks
  axes = (rng.uniform(0.4, 1.0, 2) * max_radius * size).astype(int) + 1
  mask = np.zeros((size, size), np.float32)
  cv2.ellipse(mask, (int(cx), int(cy)), (int(axes[0]), int(axes[1])),
              rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
  return mask


def lighting_field(rng: np.random.Generator, size: int,
                   strength: float) -> np.ndarray:
  """[size, size] multiplicative light: a ramp in a random direction plus
  smooth blotches, between 1 - strength and 1 (never brightening past 1)."""
  angle = rng.uniform(0, 2 * math.pi)
  ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
  ramp = xs * math.cos(angle) + ys * math.sin(angle)
  blotches = noise_texture(rng, size, octaves=2) - 0.5
  field = ramp + 0.5 * blotches
  field = (field - field.min()) / max(field.max() - field.min(), 1e-6)
  return (1.0 - strength * field).astype(np.float32)


def render_example(ellipses: list, rng: np.random.Generator, cfg: SynthConfig,
                   photos: list = (), hard_rng: np.random.Generator = None
                   ) -> tuple:
  """One example of an identity.

  The hard variant's effects (cfg.elastic, occlusion, lighting) draw from
  `hard_rng`, so the plain variant's images stay the same for a seed.

  Returns:
    image: [size, size] uint8 grayscale.
    landmarks: [3, 2] float64 continuous pixel coordinates (may be outside).
    visible: [3] bool, False for a corner that left the frame.
  """
  size = cfg.size
  homography = random_homography(rng, cfg)
  canonical = pattern_mask(ellipses, size)
  if cfg.elastic:
    canonical = deform(canonical, elastic_field(hard_rng, size,
                                                cfg.elastic * size))
  mask = warp_image(canonical, homography, size)

  def texture():
    if photos:
      return photo_texture(rng, photos[rng.integers(len(photos))], size)
    return noise_texture(rng, size)

  # The background is rescaled lighter than the pattern so they never merge.
  background = rescale(texture(), cfg.background_range)
  pattern = rescale(texture(), cfg.pattern_range)
  landmarks = warp_points(homography, CANONICAL_CORNERS * size)
  if cfg.body:
    silhouette = warp_image(body_mask(size, cfg.head), homography, size)
    sign = 1.0 if hard_rng.random() < 0.5 else -1.0
    skin = np.clip(background + sign * cfg.body + 0.06 * (
        noise_texture(hard_rng, size, octaves=3) - 0.5), 0.0, 1.0)
    background = background * (1 - silhouette) + skin * silhouette
  image = background * (1 - mask) + pattern * mask
  if cfg.occlusion:
    # Something in front of the body: the background's texture over it.
    hidden = occluder(hard_rng, landmarks, size, cfg.occlusion)
    cover = rescale(noise_texture(hard_rng, size), cfg.background_range)
    image = image * (1 - hidden) + cover * hidden
  if cfg.lighting:
    image = image * lighting_field(hard_rng, size, cfg.lighting)
  image += rng.normal(0, cfg.noise_std, image.shape)
  image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)

  visible = np.all((landmarks >= 0) & (landmarks < size), axis=1)
  return image, landmarks, visible

"""Synthetic manta rays: the paper's real-data regime (§4.1.2), rendered.

An identity is a ray's belly: a fixed pattern of dark spots on a white
ventral side, with the five landmarks of the paper's real set (right eye,
left eye, outer corner of the fifth right and left gill slits, tail). An
example is that belly as a bent 3D surface -- each wing folds out of plane
by its own angle, the body arches along its axis and swings its tail -- seen
by a pinhole camera at an oblique angle from below, against bright surface
water, framed so that parts of the body (and landmarks) leave the picture,
behind fish, bubbles and marine snow, under uneven light and haze, with
sensor noise. The landmarks are points of the surface, so they move with
the bend exactly as the spots do.

The parameters are fixed from the paper's description, not from what any
method does on the data; docs/MANTA.md gives the reason for each.

Coordinates: canonical points are fractions of the canonical square, in the
ventral view with the head up (seen from below, the animal's right is on
the image's left). Image coordinates are continuous pixels, (0, 0) the
top-left corner, as in synthetic.py.
"""

import dataclasses
import math

import cv2
import numpy as np

from data_tools import synthetic
from data_tools import underwater

LANDMARK_NAMES = ('right_eye', 'left_eye', 'right_gill5', 'left_gill5',
                  'tail')
EYE = (0.413, 0.24)
GILL5_OUTER = (0.397, 0.496)
TAIL_BASE = (0.5, 0.77)
CANONICAL_LANDMARKS = np.array([
    EYE, (1 - EYE[0], EYE[1]), GILL5_OUTER, (1 - GILL5_OUTER[0],
                                             GILL5_OUTER[1]), TAIL_BASE])
# The fold of each wing starts this far from the midline (canonical units):
# beside the head, so the gill rows and the fifth gills' outer corners sit on
# the flexing part of the disc, as on a ray.
FOLD_START = 0.06
FOLD_WIDTH = 0.2


@dataclasses.dataclass(frozen=True)
class MantaConfig:
  """docs/MANTA.md gives the reason for every value."""
  size: int = 128
  min_spots: int = 8
  max_spots: int = 24
  min_spot: float = 0.006        # spot semi-axis, canonical units
  max_spot: float = 0.028
  wing_fold: float = 35.0        # max out-of-plane fold of each wing, degrees
  arch: float = 25.0             # max pitch of the tail end, degrees
  tail_swing: float = 0.025      # max sideways bend at the tail, canonical
  max_tilt: float = 50.0         # oblique view: camera off the normal, degrees
  min_distance: float = 1.2      # camera distance, canonical units (a wide
  max_distance: float = 3.0      # lens close to the animal)
  min_zoom: float = 0.85         # canonical square / frame width
  max_zoom: float = 2.2
  framing_shift: float = 0.18    # std of the body centre's offset, of size
  fish_rate: float = 0.8         # mean fish per image (Poisson)
  bubble_probability: float = 0.3
  lighting: float = 0.5          # max relative darkening across the body
  max_haze: float = 0.45         # max blend of the body towards water colour
  max_noise: float = 0.04        # max Gaussian noise std, [0, 1] scale
  max_blur: float = 0.8          # max defocus sigma, pixels at 128 px


@dataclasses.dataclass(frozen=True)
class Identity:
  spots: tuple       # synthetic.Ellipse in canonical pixels of size 1
  margin: float      # width of the dark wing margins, canonical units
  tone: float        # belly brightness


def _bezier(points, n=12):
  points = np.asarray(points, np.float64)
  t = np.linspace(0, 1, n)[:, None]
  degree = len(points) - 1
  out = sum(math.comb(degree, i) * t ** i * (1 - t) ** (degree - i) * p
            for i, p in enumerate(points))
  return out


def outline() -> np.ndarray:
  """[N, 2] canonical polygon of the disc (head, cephalic fins, wings,
  pelvic fins), clockwise from the mouth; the tail is drawn apart."""
  half = np.concatenate([
      _bezier([(0.5, 0.205), (0.462, 0.205)], 2),
      _bezier([(0.462, 0.205), (0.458, 0.12), (0.44, 0.115)]),
      _bezier([(0.44, 0.115), (0.415, 0.11), (0.412, 0.17)]),
      _bezier([(0.412, 0.17), (0.405, 0.235)], 2),
      _bezier([(0.405, 0.235), (0.30, 0.25), (0.12, 0.33), (0.04, 0.44)],
              24),
      _bezier([(0.04, 0.44), (0.03, 0.46), (0.06, 0.47)]),
      _bezier([(0.06, 0.47), (0.22, 0.50), (0.34, 0.56), (0.39, 0.66)], 24),
      _bezier([(0.39, 0.66), (0.42, 0.74), (0.47, 0.765)]),
      _bezier([(0.47, 0.765), (0.5, 0.77)], 2)])
  mirrored = half[::-1] * [-1, 1] + [1, 0]
  return np.concatenate([half, mirrored])


def seed_identity(rng: np.random.Generator, cfg: MantaConfig) -> Identity:
  """A belly pattern: spots between the gill rows and on the lower belly,
  each one to three overlapping ellipses, sizes log-uniform."""
  spots = []
  for _ in range(rng.integers(cfg.min_spots, cfg.max_spots + 1)):
    if rng.random() < 0.3:     # between the gill rows
      cx, cy = 0.5 + rng.uniform(-0.055, 0.055), rng.uniform(0.30, 0.50)
    else:                      # lower belly: a uniform point of an ellipse
      r, a = math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
      cx, cy = 0.5 + 0.14 * r * math.cos(a), 0.58 + 0.11 * r * math.sin(a)
    size = math.exp(rng.uniform(math.log(cfg.min_spot),
                                math.log(cfg.max_spot)))
    for _ in range(rng.integers(1, 4)):
      ox, oy = rng.uniform(-size, size, 2)
      ax, ay = size * rng.uniform(0.5, 1.0, 2)
      spots.append(synthetic.Ellipse(cx + ox, cy + oy, ax, ay,
                                     rng.uniform(0, 180)))
  return Identity(tuple(spots), margin=rng.uniform(0.02, 0.06),
                  tone=rng.uniform(0.85, 0.97))


def canonical_layers(identity: Identity, resolution: int) -> tuple:
  """The flat ventral view at `resolution` px: (premultiplied RGB [R, R, 3],
  alpha [R, R]) float32 in [0, 1]."""
  shift = 4
  scale = resolution * (1 << shift)

  def fixed(points):
    return np.round((np.asarray(points) * resolution - 0.5) * (1 << shift)
                    ).astype(np.int32)

  alpha = np.zeros((resolution, resolution), np.uint8)
  cv2.fillPoly(alpha, [fixed(outline())], 255, cv2.LINE_AA, shift)
  tail = [(0.488, 0.76), (0.497, 0.97), (0.503, 0.97), (0.512, 0.76)]
  cv2.fillPoly(alpha, [fixed(tail)], 255, cv2.LINE_AA, shift)
  alpha = alpha.astype(np.float32) / 255
  # Dark wing margins, head and cephalic fins: darker towards the outline.
  inside = cv2.distanceTransform((alpha > 0.5).astype(np.uint8),
                                 cv2.DIST_L2, 5) / resolution
  dark = np.clip(1 - inside / identity.margin, 0, 1) ** 1.5
  rng = np.random.default_rng(len(identity.spots))
  skin = identity.tone * (1 + 0.06 * (synthetic.noise_texture(
      rng, resolution, 4) - 0.5))
  colour = np.stack([skin * 0.97, skin * 0.98, skin], -1)
  margin_colour = np.array([0.22, 0.24, 0.28], np.float32)
  colour = colour * (1 - dark[..., None]) + margin_colour * dark[..., None]

  marks = np.zeros((resolution, resolution), np.uint8)
  for k in range(5):          # gill slits, the fifth with its distal mark
    y = 0.32 + 0.042 * k
    inner, outer = (0.462 - 0.002 * k, y), (0.385 + 0.003 * k, y + 0.008)
    for side in (lambda p: p, lambda p: (1 - p[0], p[1])):
      cv2.line(marks, tuple(fixed(side(inner))), tuple(fixed(side(outer))),
               150, max(1, round(0.004 * resolution)), cv2.LINE_AA, shift)
      if k == 4:
        cv2.circle(marks, tuple(fixed(side(outer))), round(0.01 * scale),
                   255, -1, cv2.LINE_AA, shift)
  cv2.ellipse(marks, tuple(fixed((0.5, 0.212))),
              (round(0.036 * scale), round(0.008 * scale)), 0, 0, 360, 230,
              -1, cv2.LINE_AA, shift)          # mouth
  for eye in CANONICAL_LANDMARKS[:2]:
    cv2.circle(marks, tuple(fixed(eye)), round(0.009 * scale), 255, -1,
               cv2.LINE_AA, shift)
  for e in identity.spots:
    cv2.ellipse(marks, tuple(fixed((e.cx, e.cy))),
                (max(1, round(e.ax * scale)), max(1, round(e.ay * scale))),
                e.angle, 0, 360, 235, -1, cv2.LINE_AA, shift)
  marks = marks.astype(np.float32)[..., None] / 255
  ink = np.array([0.08, 0.08, 0.1], np.float32)
  colour = colour * (1 - marks) + ink * marks
  colour = cv2.GaussianBlur(colour.astype(np.float32), (0, 0), 0.6)
  return colour * alpha[..., None], alpha


@dataclasses.dataclass(frozen=True)
class View:
  """One example's body pose and camera."""
  fold: tuple            # (right wing, left wing) radians
  arch: float            # curvature along the body axis, 1 / canonical unit
  swing: float           # sideways bend coefficient
  rotation: np.ndarray   # 3x3 camera tilt
  distance: float
  yaw: float             # in-image rotation, radians
  zoom: float
  centre: np.ndarray     # image position of the canonical centre, pixels
  size: int


def random_view(rng: np.random.Generator, cfg: MantaConfig) -> View:
  fold = tuple(np.radians(rng.uniform(-cfg.wing_fold, cfg.wing_fold, 2)))
  arch = math.radians(rng.uniform(-cfg.arch, cfg.arch)) / (TAIL_BASE[1] - 0.5)
  swing = rng.uniform(-1, 1) * cfg.tail_swing / (TAIL_BASE[1] - 0.5) ** 2
  axis = rng.uniform(0, 2 * math.pi)
  rotation = cv2.Rodrigues(np.array(
      [math.cos(axis), math.sin(axis), 0.0]) * math.radians(
          rng.uniform(0, cfg.max_tilt)))[0]
  distance = rng.uniform(cfg.min_distance, cfg.max_distance)
  zoom = math.exp(rng.uniform(math.log(cfg.min_zoom), math.log(cfg.max_zoom)))
  centre = cfg.size * (0.5 + np.clip(rng.normal(0, cfg.framing_shift, 2),
                                     -0.35, 0.35))
  return View(fold, arch, swing, rotation, distance,
              rng.uniform(0, 2 * math.pi), zoom, centre, cfg.size)


def surface(points: np.ndarray, view: View) -> tuple:
  """Canonical [..., 2] -> (3D points [..., 3] of the bent body, fold angle
  [...] of the surface there, for shading)."""
  u = points[..., 0] - 0.5
  v = points[..., 1] - 0.5
  # The tail swings sideways, quadratically along the body.
  u = u + view.swing * np.maximum(v, 0) ** 2
  # Each wing folds out of plane: the angle grows linearly over FOLD_WIDTH.
  r = np.abs(u)
  theta = np.where(u < 0, view.fold[0], view.fold[1])
  safe = np.where(np.abs(theta) < 1e-6, 1e-6, theta)
  s = np.clip(r - FOLD_START, 0, FOLD_WIDTH)
  beyond = np.maximum(r - FOLD_START - FOLD_WIDTH, 0)
  phi = safe * s / FOLD_WIDTH
  lateral = (np.minimum(r, FOLD_START) + FOLD_WIDTH / safe * np.sin(phi)
             + beyond * np.cos(theta))
  z = FOLD_WIDTH / safe * (1 - np.cos(phi)) + beyond * np.sin(theta)
  x = np.sign(u) * lateral
  # The body arches along its axis (a circular arc of curvature `arch`).
  k = view.arch if abs(view.arch) > 1e-6 else 1e-6
  y = np.sin(k * v) / k
  z = z + (1 - np.cos(k * v)) / k
  return np.stack([x, y, z], -1), phi


def project(points3d: np.ndarray, view: View) -> np.ndarray:
  """[..., 3] body points -> [..., 2] image pixels (pinhole camera)."""
  p = points3d @ view.rotation.T
  depth = np.maximum(view.distance + p[..., 2], 0.05 * view.distance)
  plane = p[..., :2] * (view.distance / depth)[..., None]
  c, s = math.cos(view.yaw), math.sin(view.yaw)
  turned = plane @ np.array([[c, -s], [s, c]]).T
  return view.centre + view.zoom * view.size * turned


def plane_homography(view: View) -> np.ndarray:
  """3x3 canonical (x, y, 1) -> image pixels for the unbent body."""
  r, d = view.rotation, view.distance
  camera = np.array([[r[0, 0], r[0, 1], 0], [r[1, 0], r[1, 1], 0],
                     [r[2, 0] / d, r[2, 1] / d, 1]])
  c, s = math.cos(view.yaw), math.sin(view.yaw)
  zs = view.zoom * view.size
  image = np.array([[zs * c, -zs * s, view.centre[0]],
                    [zs * s, zs * c, view.centre[1]], [0, 0, 1]])
  return image @ camera @ np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])


def landmarks_of(view: View) -> np.ndarray:
  """[5, 2] image pixels of the landmarks under the view's bend."""
  return project(surface(CANONICAL_LANDMARKS, view)[0], view)


def backward_map(view: View, iterations: int = 20, step: int = 4) -> tuple:
  """Canonical point seen at each pixel centre: ([S, S, 2], fold angle
  [S, S], converged [S, S] bool).

  Solved by fixed-point iteration (the unbent plane's inverse homography is
  the approximate inverse) on a grid of every `step`-th pixel, then
  interpolated linearly: the map is smooth, and the landmarks, computed
  forward, do not depend on it."""
  size = view.size
  coarse = np.linspace(0.5, size - 0.5, max(2, (size - 1) // step + 1))
  ys, xs = np.meshgrid(coarse, coarse, indexing='ij')
  pixels = np.stack([xs, ys], -1)
  inverse = np.linalg.inv(plane_homography(view))
  to_plane = lambda p: synthetic.warp_points(inverse, p.reshape(-1, 2)
                                             ).reshape(p.shape)
  target = to_plane(pixels)
  canonical = target.copy()
  for _ in range(iterations):
    seen = project(surface(canonical, view)[0], view)
    canonical = canonical + 0.8 * (target - to_plane(seen))
    canonical = np.clip(np.nan_to_num(canonical), -1.0, 2.0)
  seen = project(surface(canonical, view)[0], view)
  error = np.linalg.norm(seen - pixels, axis=-1)
  # Coarse point i sits at pixel centre 0.5 + i * spacing.
  spacing = (size - 1) / (len(coarse) - 1)
  at = ((np.arange(size, dtype=np.float32)) / spacing)
  fine = lambda a: cv2.remap(a.astype(np.float32), *np.meshgrid(at, at),
                             cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
  dense = fine(canonical).astype(np.float64)
  error = fine(error)
  return dense, surface(dense, view)[1], error < 0.25

def render_example(layers: tuple, rng: np.random.Generator,
                   cfg: MantaConfig) -> tuple:
  """One photo of an identity whose canonical_layers are `layers`.

  Returns:
    image: [S, S, 3] uint8 RGB.
    landmarks: [5, 2] float64 continuous pixels (may be outside the frame).
    visible: [5] bool: inside the frame and not behind an occluder.
  """
  size = cfg.size
  view = random_view(rng, cfg)
  canonical, phi, converged = backward_map(view)
  premultiplied, alpha = layers
  resolution = alpha.shape[0]
  grid = (canonical * resolution - 0.5).astype(np.float32)
  sample = lambda image: cv2.remap(image, grid[..., 0], grid[..., 1],
                                   cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=0)
  body = sample(premultiplied)
  cover = sample(alpha) * converged
  body = body * converged[..., None]
  water, water_mid = underwater.background(rng, size)
  # Light: a gradient with blotches across the body, and a wing that folds
  # away from the camera darker.
  light = synthetic.lighting_field(rng, size, rng.uniform(0, cfg.lighting))
  light = light * (1 - 0.35 * (1 - np.cos(phi)))
  haze = rng.uniform(0.1, cfg.max_haze)
  body = body * light[..., None] * (1 - haze) + (
      water_mid * haze) * cover[..., None]
  image = water * (1 - cover[..., None]) + body
  occluders, hidden = underwater.occluders(rng, cfg.size, cfg.fish_rate,
                                          cfg.bubble_probability)
  image = image * (1 - hidden[..., None]) + occluders
  sigma = rng.uniform(0, cfg.max_blur) * size / 128
  if sigma > 0.3:
    image = cv2.GaussianBlur(image, (0, 0), sigma)
  image = image + rng.normal(0, rng.uniform(0.01, cfg.max_noise), image.shape)
  image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)

  landmarks = landmarks_of(view)
  inside = np.all((landmarks >= 0) & (landmarks < size), axis=1)
  pixel = np.clip(np.floor(landmarks), 0, size - 1).astype(int)
  covered = hidden[pixel[:, 1], pixel[:, 0]] > 0.5
  return image, landmarks, inside & ~covered


def visibility_mix(visible_counts) -> dict:
  """Share of images with 5, 4 and <= 3 visible landmarks."""
  counts = np.asarray(visible_counts)
  return {'5': float(np.mean(counts == 5)), '4': float(np.mean(counts == 4)),
          '<=3': float(np.mean(counts <= 3))}


def format_mix(mix: dict, images: int) -> str:
  return (f'visible landmarks per image ({images} images): '
          f'5: {100 * mix["5"]:.1f} %, 4: {100 * mix["4"]:.1f} %, '
          f'<=3: {100 * mix["<=3"]:.1f} % (paper §4.1.2: about 50 / 30 / '
          '20 %)')

"""The animal, not the photo: box + margin -> the region stored, and the
landmarks moved into it. Pure geometry on pixel coordinates (numpy-free).

Coordinates are continuous pixels: (0, 0) is the top-left corner of the
top-left pixel, as in records.py, so a region [x0, x1) x [y0, y1) of whole
pixels holds the points x0 <= x <= x1.
"""

import math
from typing import Optional, Sequence


def check_box(box: Sequence[float], width: int, height: int) -> Optional[str]:
  """None when the box (x0, y0, x1, y1) is usable in a width x height photo,
  else the reason it is not."""
  x0, y0, x1, y1 = box
  if x1 <= x0 or y1 <= y0:
    return (f'box of zero area: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) needs '
            'x1 > x0 and y1 > y0')
  if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
    return (f'box outside the photo: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) in a '
            f'{width}x{height} photo')
  return None


def region(box: Optional[Sequence[float]], margin: float, width: int,
           height: int) -> tuple:
  """The whole-pixel region (x0, y0, x1, y1) stored for a box: the box grown
  by `margin` x its width / height on each side, clipped to the photo. The
  margin keeps the outline, which a tight detector box cuts. No box: the
  whole photo."""
  if box is None:
    return (0, 0, width, height)
  x0, y0, x1, y1 = box
  dx, dy = margin * (x1 - x0), margin * (y1 - y0)
  return (max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy)),
          min(width, math.ceil(x1 + dx)), min(height, math.ceil(y1 + dy)))


def scaled_region(full_region: tuple, factor: int, width: int,
                  height: int) -> tuple:
  """A region of the photo in a copy decoded at 1 / factor (JPEG DCT
  scaling, ceil(width / factor) pixels wide): the smallest whole-pixel
  region there covering `full_region`. Returns (region in the small copy,
  the same region in photo pixels), the second to move landmarks exactly."""
  x0, y0, x1, y1 = full_region
  small = (x0 // factor, y0 // factor,
           min(-(-x1 // factor), -(-width // factor)),
           min(-(-y1 // factor), -(-height // factor)))
  sx0, sy0, sx1, sy1 = small
  return small, (sx0 * factor, sy0 * factor, min(width, sx1 * factor),
                 min(height, sy1 * factor))


def move_landmarks(points: Sequence, full_region: tuple) -> tuple:
  """Photo-pixel landmarks -> (xs, ys, visible) normalised to the region
  (records.py's coordinates), or a reason string when a visible landmark
  lies outside the region."""
  x0, y0, x1, y1 = full_region
  xs, ys, visible = [], [], []
  for k, point in enumerate(points):
    if point is None:
      xs.append(0.0), ys.append(0.0), visible.append(0)
      continue
    x, y = point
    if not (x0 <= x <= x1 and y0 <= y <= y1):
      return (f'landmark {k} at ({x:g}, {y:g}) is outside the stored region '
              f'({x0}, {y0}, {x1}, {y1}) (box plus margin, or the photo)')
    xs.append((x - x0) / (x1 - x0))
    ys.append((y - y0) / (y1 - y0))
    visible.append(1)
  return xs, ys, visible


def reduction(region_width: int, region_height: int, store_size: int) -> int:
  """The largest JPEG DCT scale factor (1, 2, 4 or 8) that still leaves the
  region at least `store_size` on its longest side: decoding a 4000 px photo
  at 1/8 costs a fraction of the full decode and loses nothing the stored
  copy keeps."""
  if store_size <= 0:
    return 1
  longest = max(region_width, region_height)
  for factor in (8, 4, 2):
    if longest / factor >= store_size:
      return factor
  return 1


def stored_shape(width: int, height: int, store_size: int) -> tuple:
  """(width, height) of the stored copy: longest side at most store_size,
  never enlarged, aspect kept (sides rounded, at least 1)."""
  longest = max(width, height)
  if store_size <= 0 or longest <= store_size:
    return width, height
  scale = store_size / longest
  return max(1, round(width * scale)), max(1, round(height * scale))

"""One photo file -> the copy a record stores: format by content, the cheapest
exact decode, the animal's region, a bounded size.

A camera photo (3000-4000 px) is decoded once here, at conversion, and
stored as its region at most `store_size` pixels on its longest side; every
training epoch then decodes the small copy. A JPEG is decoded straight at
1/2, 1/4 or 1/8 (libjpeg's DCT scaling) when that still leaves the stored
size, which is most of the cost saved.

EXIF orientation is ignored, as TensorFlow's decoder does: annotations and
stored copies are in the file's own pixel grid.
"""

import dataclasses
import io
import os
from typing import Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from data_tools import crops

_MAGIC = ((b'\xff\xd8\xff', 'jpeg'), (b'\x89PNG\r\n\x1a\n', 'png'),
          (b'GIF8', 'gif'), (b'BM', 'bmp'), (b'II*\x00', 'tiff'),
          (b'MM\x00*', 'tiff'))
_EXTENSIONS = {'.jpg': 'jpeg', '.jpeg': 'jpeg', '.jpe': 'jpeg', '.png': 'png',
               '.gif': 'gif', '.bmp': 'bmp', '.tif': 'tiff', '.tiff': 'tiff',
               '.webp': 'webp'}
_REDUCED = {(2, 1): cv2.IMREAD_REDUCED_GRAYSCALE_2,
            (4, 1): cv2.IMREAD_REDUCED_GRAYSCALE_4,
            (8, 1): cv2.IMREAD_REDUCED_GRAYSCALE_8,
            (2, 3): cv2.IMREAD_REDUCED_COLOR_2,
            (4, 3): cv2.IMREAD_REDUCED_COLOR_4,
            (8, 3): cv2.IMREAD_REDUCED_COLOR_8}
JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class Stored:
  encoded: bytes            # JPEG or PNG
  width: int                # of the stored copy
  height: int
  channels: int             # 1 or 3
  region: tuple             # (x0, y0, x1, y1) of the photo, in its pixels
  xs: list                  # landmarks normalised to the region
  ys: list
  visible: list
  note: str = ''            # kept, but worth saying (an extension that lies)


def sniff(data: bytes) -> str:
  """The image format the bytes are in ('jpeg', 'png', ...), '' if none
  known. WebP is RIFF....WEBP."""
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return 'webp'
  for magic, name in _MAGIC:
    if data.startswith(magic):
      return name
  return ''


def extension_note(path: str, fmt: str) -> str:
  """A note when the file's extension names another format than its
  content (a JPEG saved as .png): it is decoded by content."""
  claimed = _EXTENSIONS.get(os.path.splitext(path)[1].lower())
  if claimed and fmt and claimed != fmt:
    return (f'extension {os.path.splitext(path)[1]!r} but the content is '
            f'{fmt.upper()}; decoded by content')
  return ''


def _header(data: bytes) -> Optional[tuple]:
  """(width, height, channels) from the header alone, or None."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      channels = 1 if image.mode in ('1', 'L', 'LA', 'I', 'I;16', 'F') else 3
      return image.size[0], image.size[1], channels
  except Exception:  # Any unreadable header: fall back to a full decode.
    return None


def _to_8bit(image: np.ndarray) -> np.ndarray:
  if image.ndim == 3 and image.shape[2] == 4:
    image = image[:, :, :3]
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[:, :, 0]
  if image.dtype == np.uint16:
    image = (image // 257).astype(np.uint8)
  return image


def _undecodable(path):
  return f'undecodable image {path} (not an image, or damaged)'


def store(data: bytes, path: str, box: Optional[Sequence[float]],
          points: Sequence, margin: float, store_size: int):
  """The stored copy of one annotation, or the reason it cannot be made.

  Args:
    data: the photo file's bytes; path: its name, for the format note.
    box: (x0, y0, x1, y1) photo pixels, or None for the whole photo.
    points: per landmark (x, y) photo pixels or None.
    store_size: longest stored side; 0 keeps the region's size.
  """
  fmt = sniff(data)
  header = _header(data)
  image = None
  if header is None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
      return _undecodable(path)
    header = (image.shape[1], image.shape[0], 1 if image.ndim == 2 else 3)
  width, height, channels = header
  if box is not None:
    reason = crops.check_box(box, width, height)
    if reason:
      return reason
  else:
    for k, point in enumerate(points):
      if point is not None and not (0 <= point[0] <= width
                                    and 0 <= point[1] <= height):
        return (f'out-of-frame coordinate for landmark {k}: ({point[0]:g}, '
                f'{point[1]:g}) in a {width}x{height} image')
  region = crops.region(box, margin, width, height)
  factor = 1
  if fmt == 'jpeg' and image is None:
    factor = crops.reduction(region[2] - region[0], region[3] - region[1],
                             store_size)
  small, region = crops.scaled_region(region, factor, width, height)
  moved = crops.move_landmarks(points, region)
  if isinstance(moved, str):
    return moved
  whole = region == (0, 0, width, height)
  target = crops.stored_shape(region[2] - region[0], region[3] - region[1],
                              store_size)
  keep_bytes = (whole and factor == 1 and fmt in ('jpeg', 'png')
                and target == (width, height))
  if image is None:
    # Decoded even when the bytes are kept: a damaged file is caught here,
    # not in the middle of training.
    flags = (_REDUCED[factor, channels] | cv2.IMREAD_IGNORE_ORIENTATION
             if factor > 1 else cv2.IMREAD_UNCHANGED)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
  if image is None or image.size == 0:
    return _undecodable(path)
  image = _to_8bit(image)
  channels = 1 if image.ndim == 2 else 3
  if keep_bytes:
    encoded = data
  else:
    x0, y0, x1, y1 = small
    image = image[y0:y1, x0:x1]
    if (image.shape[1], image.shape[0]) != target:
      image = cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    as_jpeg = fmt == 'jpeg'
    encoded = cv2.imencode('.jpg' if as_jpeg else '.png', image,
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
                           if as_jpeg else [])[1].tobytes()
  return Stored(encoded, target[0], target[1], channels, region, *moved,
                note=extension_note(path, fmt))

"""Is this upload a photo the desk can take?

A photo is refused, with the reason a reviewer can act on, when it is not
an image, is truncated, or claims more pixels than --max_pixels (a
decompression bomb: a 20,000 x 20,000 PNG is a few kB on disk and 1.2 GB
decoded). The header is read before anything is decoded.

Accepted photos are kept by database.store_photo, under their content hash.
"""

import io
import warnings

from PIL import Image

# Formats the export's graph decodes (preprocess.check_encoded).
FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP')
MIME = {'JPEG': 'image/jpeg', 'PNG': 'image/png', 'GIF': 'image/gif',
        'BMP': 'image/bmp'}


class BadPhoto(ValueError):
  """A photo the desk will not take; str() is the reason."""


def check(data: bytes, max_bytes: int, max_pixels: int) -> tuple:
  """(width, height, format) of an acceptable photo; BadPhoto otherwise."""
  if len(data) > max_bytes:
    raise BadPhoto(f'{len(data) / 2**20:.1f} MB is above the upload limit of '
                   f'{max_bytes / 2**20:.0f} MB (--max_upload_mb)')
  if not data:
    raise BadPhoto('empty file')
  try:
    with warnings.catch_warnings():
      # Pillow warns, then raises, on huge images; we check size ourselves.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
      width, height = image.size
      kind = image.format
  except Image.DecompressionBombError:
    raise BadPhoto(f'far more pixels than the limit of {max_pixels / 1e6:.0f} '
                   'megapixels (a decompression bomb?)') from None
  except Exception:  # Pillow raises many types for "not an image"
    raise BadPhoto('not an image (JPEG, PNG, GIF or BMP)') from None
  if kind not in FORMATS:
    raise BadPhoto(f'{kind} is not supported: JPEG, PNG, GIF or BMP')
  if width * height > max_pixels:
    raise BadPhoto(f'{width} x {height} pixels is above the limit of '
                   f'{max_pixels / 1e6:.0f} megapixels (a decompression '
                   'bomb?)')
  try:
    image.load()   # decodes every pixel: a truncated file fails here
  except Exception as e:
    raise BadPhoto(f'damaged or truncated {kind} ({e})') from None
  return width, height, kind


def mime_type(data: bytes) -> str:
  try:
    return MIME.get(Image.open(io.BytesIO(data)).format,
                    'application/octet-stream')
  except Exception:
    return 'application/octet-stream'

"""The pixel limit of every stored image: admin uploads and generated images.

One check, ``image_size_check``, reads the size from the file's header (Pillow's ``open`` decodes
no pixels), so a small file that claims a huge size is refused before anything decodes it.
"""

from __future__ import annotations

import io
import warnings

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image as PILImage


class ImageRejected(ValueError):
    """An image file that is not stored; the message is one line for the user, ``code`` says why."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code = code


def image_size_check(source) -> tuple[int, int]:
    """(width, height) of an image file (bytes or a binary file), within ``IMAGE_MAX_PIXELS``.

    Raises ImageRejected when the file is not an image or has more pixels than the limit.
    """
    limit = settings.IMAGE_MAX_PIXELS
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    start = handle.tell()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # refused below, by our limit
            with PILImage.open(handle) as image:
                width, height = image.size
    except PILImage.DecompressionBombError:  # Pillow's own hard limit, far above ours
        raise ImageRejected(f"more than IMAGE_MAX_PIXELS ({limit}) pixels", code="image_too_large") from None
    except Exception as exc:  # Pillow raises many types for data it cannot read; all mean "not an image"
        raise ImageRejected(f"not an image ({type(exc).__name__}: {exc})", code="not_an_image") from None
    finally:
        handle.seek(start)
    if width * height > limit:
        raise ImageRejected(
            f"{width}x{height} is {width * height} pixels, more than IMAGE_MAX_PIXELS ({limit})", code="image_too_large"
        )
    return width, height


def validate_image_pixels(value) -> None:
    """Model field validator: a newly uploaded file (not one already stored) within the pixel limit."""
    if getattr(value, "_committed", True):
        return
    value.open("rb")
    try:
        image_size_check(value.file)
    except ImageRejected as exc:
        raise ValidationError(str(exc), code=exc.code) from None


def image_decode_check(handle) -> str:
    """Decode a whole image file (a binary file), within ``IMAGE_MAX_PIXELS``; returns its format (e.g. "PNG").

    ``image_size_check`` reads only the header; this also checks the data (``verify``) and decodes
    every pixel (``load``), so a truncated or corrupt file is refused. Raises ImageRejected.
    """
    image_size_check(handle)
    start = handle.tell()
    try:
        with PILImage.open(handle) as image:
            image_format = image.format or ""
            image.verify()
        handle.seek(start)
        with PILImage.open(handle) as image:
            image.load()
    except Exception as exc:  # as in image_size_check: every Pillow failure means the file is not a whole image
        raise ImageRejected(f"does not decode ({type(exc).__name__}: {exc})", code="not_an_image") from None
    finally:
        handle.seek(start)
    return image_format

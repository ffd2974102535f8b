"""Encode and decode single-channel flow components and RGB frames.

Codecs: ``jpeg`` (lossy, ``quality`` 0..100), ``png`` (lossless, ``level`` 0..9) and ``raw``
(the uint8 pixels, row-major, no header: the frame size is in the manifest). All encoded
images are standard files that ``cv2.imdecode`` (or PIL) reads. :data:`CODECS` is the one
table of codecs; a new one is a :class:`Codec` passed to :func:`register_codec`.
"""
from __future__ import annotations

import cv2
import numpy as np
from .errors import InputError
from .registry import Registry

DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 1  # PNG compression level: small effect on size for flow, large on speed


class Codec:
    """How one codec turns uint8 images into bytes and back; registered with :func:`register_codec`."""

    def effective_quality(self, quality: int | None) -> int | None:
        """The quality/level actually used (recorded in the manifest); None if it takes none."""
        return None

    def check_quality(self, quality: int | None) -> None:
        """Raise InputError if ``quality`` is not valid for this codec."""

    def encode_gray(self, plane: np.ndarray, quality: int | None) -> bytes:
        raise NotImplementedError

    def decode_gray(self, data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
        raise NotImplementedError

    def encode_rgb(self, rgb: np.ndarray, quality: int | None) -> bytes:
        raise NotImplementedError

    def decode_rgb(self, data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
        raise NotImplementedError


#: codec name -> :class:`Codec`
CODECS: Registry[Codec] = Registry("codec")


def register_codec(name: str, codec: Codec) -> Codec:
    return CODECS.register(name, codec)


def list_codecs() -> list[str]:
    return CODECS.names()


def check_codec(name: str) -> str:
    return CODECS.check(name)


class OpenCVImageCodec(Codec):
    """A standard image file written by ``cv2.imencode``: ``ext`` (".jpg"), the OpenCV
    ``flag`` of its quality setting, its default and its valid range (``what`` names it)."""

    def __init__(self, name: str, ext: str, flag: int, default: int, valid: range, what: str):
        self.name, self.ext, self.flag, self.default, self.valid, self.what = name, ext, flag, default, valid, what

    def effective_quality(self, quality: int | None) -> int:
        return self.default if quality is None else int(quality)

    def check_quality(self, quality: int | None) -> None:
        self._params(quality)

    def _params(self, quality: int | None) -> list[int]:
        q = self.effective_quality(quality)
        if q not in self.valid:
            raise InputError(f"{self.what} must be in {self.valid.start}..{self.valid.stop - 1}, got {q}")
        return [self.flag, q]

    def encode_gray(self, plane: np.ndarray, quality: int | None) -> bytes:
        return self._encode(plane, quality, "plane")

    def encode_rgb(self, rgb: np.ndarray, quality: int | None) -> bytes:
        # stored as a normal JPEG/PNG, i.e. BGR order inside OpenCV
        return self._encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), quality, "frame")

    def _encode(self, image: np.ndarray, quality: int | None, what: str) -> bytes:
        ok, buf = cv2.imencode(self.ext, image, self._params(quality))
        if not ok:
            raise RuntimeError(f"OpenCV failed to encode a {image.shape} {what} as {self.name}")
        return buf.tobytes()

    def decode_gray(self, data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
        return self._decode(data, cv2.IMREAD_GRAYSCALE)

    def decode_rgb(self, data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
        return cv2.cvtColor(self._decode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def _decode(self, data: bytes, flag: int) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if image is None:
            raise InputError(f"could not decode {len(data)} bytes as {self.name}")
        return image


class RawCodec(Codec):
    """The uint8 pixels, row-major, no header: the frame size comes from the manifest."""

    def encode_gray(self, plane: np.ndarray, quality: int | None) -> bytes:
        return np.ascontiguousarray(plane).tobytes()

    encode_rgb = encode_gray

    def decode_gray(self, data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
        if shape is None:
            raise InputError("raw planes need the frame shape (H, W) to decode")
        return np.frombuffer(data, np.uint8).reshape(shape)

    def decode_rgb(self, data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
        if shape is None:
            raise InputError("raw frames need the frame shape (H, W) to decode")
        return np.frombuffer(data, np.uint8).reshape(*shape, 3)


register_codec("jpeg", OpenCVImageCodec("jpeg", ".jpg", cv2.IMWRITE_JPEG_QUALITY, DEFAULT_JPEG_QUALITY,
                                        range(0, 101), "JPEG quality"))
register_codec("png", OpenCVImageCodec("png", ".png", cv2.IMWRITE_PNG_COMPRESSION, DEFAULT_PNG_LEVEL,
                                       range(0, 10), "PNG compression level"))
register_codec("raw", RawCodec())


def effective_quality(codec: str, quality: int | None) -> int | None:
    """The quality/level actually used (recorded in the manifest); None for raw."""
    return CODECS[codec].effective_quality(quality)


def check_quality(codec: str, quality: int | None) -> None:
    """Raise ValueError if ``quality`` is not valid for ``codec`` (raw ignores it)."""
    CODECS[codec].check_quality(quality)


def encode_gray(plane: np.ndarray, codec: str, quality: int | None = None) -> bytes:
    """uint8 ``(H, W)`` -> bytes."""
    if plane.dtype != np.uint8 or plane.ndim != 2:
        raise InputError(f"expected a uint8 (H, W) plane, got {plane.dtype} {plane.shape}")
    return CODECS[codec].encode_gray(plane, quality)


def decode_gray(data: bytes, codec: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """bytes -> uint8 ``(H, W)``; ``shape`` (H, W) is required for ``raw``."""
    return CODECS[codec].decode_gray(data, shape)


def encode_rgb(rgb: np.ndarray, codec: str = "jpeg", quality: int | None = None) -> bytes:
    """RGB uint8 ``(H, W, 3)`` -> bytes."""
    return CODECS[codec].encode_rgb(rgb, quality)


def decode_rgb(data: bytes, codec: str = "jpeg", shape: tuple[int, int] | None = None) -> np.ndarray:
    """bytes -> RGB uint8 ``(H, W, 3)``."""
    return CODECS[codec].decode_rgb(data, shape)

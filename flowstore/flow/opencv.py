"""OpenCV engines: Farneback (core) and dual TV-L1 (opencv-contrib ``cv2.optflow``), on the CPU."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .registry import FlowEstimator, Range, check_params
from ..errors import InputError

#: cv2.calcOpticalFlowFarneback defaults used by TSN-era tools; every one can be overridden.
FARNEBACK_DEFAULTS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}

#: OpenCV's own DualTVL1OpticalFlow defaults (cv2.optflow.DualTVL1OpticalFlow_create()).
TVL1_DEFAULTS = {
    "tau": 0.25,
    "lambda_": 0.15,
    "theta": 0.3,
    "nscales": 5,
    "warps": 5,
    "epsilon": 0.01,
    "innnerIterations": 30,
    "outerIterations": 10,
    "scaleStep": 0.8,
    "gamma": 0.0,
    "medianFiltering": 5,
}

# Valid values of each parameter, for both engines (checked by check_params when the estimator
# is built, i.e. before any video). From OpenCV's documentation and what cv2 5.0 does outside
# them (tried: see docs/ARCHITECTURE.md, "Parameter ranges"): pyr_scale >= 1, flags with
# OPTFLOW_USE_INITIAL_FLOW, nscales < 1, scaleStep outside (0, 1] and medianFiltering other than
# 1, 3, 5 raise cv2.error; winsize 0 and theta <= 0 return NaN; the others are accepted but
# meaningless (a zero or negative step, weight, tolerance or iteration count).
FARNEBACK_RANGES = {
    "pyr_scale": Range(gt=0, lt=1),
    "levels": Range(ge=0),
    "winsize": Range(ge=1),
    "iterations": Range(ge=1),
    "poly_n": Range(choices=(5, 7)),
    "poly_sigma": Range(gt=0),
    "flags": Range(choices=(0, 256), note="0 or 256 (OPTFLOW_FARNEBACK_GAUSSIAN)"),
}

TVL1_RANGES = {
    "tau": Range(gt=0),
    "lambda_": Range(gt=0),
    "theta": Range(gt=0),
    "nscales": Range(ge=1),
    "warps": Range(ge=1),
    "epsilon": Range(gt=0),
    "innnerIterations": Range(ge=1),
    "outerIterations": Range(ge=1),
    "scaleStep": Range(gt=0, lt=1),
    "gamma": Range(ge=0),
    "medianFiltering": Range(choices=(0, 1, 3, 5), note="1 (or 0) for none, 3 or 5"),
}


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> grayscale uint8 (H, W); grayscale input passes through."""
    if rgb.ndim == 2:
        return rgb
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class _OpenCVEstimator(FlowEstimator):
    engine = "opencv"
    device = "cpu"

    def __init__(self, params: dict):
        self.params = params

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return to_gray(rgb)

    def compute(self, prev: Sequence[np.ndarray], nxt: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self._pair(a, b) for a, b in zip(prev, nxt)])

    def describe(self) -> dict:
        return {
            "method": self.method,
            "engine": self.engine,
            "library": "opencv-contrib-python-headless",
            "library_version": cv2.__version__,
            "device": self.device,
            "params": dict(self.params),
        }


class OpenCVFarneback(_OpenCVEstimator):
    method = "farneback"

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        p = self.params
        return cv2.calcOpticalFlowFarneback(
            a, b, None, p["pyr_scale"], p["levels"], p["winsize"], p["iterations"],
            p["poly_n"], p["poly_sigma"], p["flags"],
        )


class OpenCVTVL1(_OpenCVEstimator):
    method = "tvl1"

    def __init__(self, params: dict):
        super().__init__(params)
        if not hasattr(cv2, "optflow"):
            raise RuntimeError(
                "cv2.optflow is missing: TV-L1 needs opencv-contrib-python-headless. "
                "Another OpenCV wheel (opencv-python, e.g. pulled in by ptlflow) has overwritten it; "
                "run: pip uninstall -y opencv-python opencv-python-headless && "
                "pip install --force-reinstall opencv-contrib-python-headless"
            )
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**params)

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._tvl1.calc(a, b, None)


def build_opencv_farneback(*, params: dict | None = None, device: str = "cpu") -> OpenCVFarneback:
    if device not in ("cpu", None):
        raise InputError(f"the opencv engine runs on the CPU only, not {device!r}; use --engine torch")
    return OpenCVFarneback(check_params("farneback", params or {}, FARNEBACK_DEFAULTS, FARNEBACK_RANGES))


def build_opencv_tvl1(*, params: dict | None = None, device: str = "cpu") -> OpenCVTVL1:
    if device not in ("cpu", None):
        raise InputError(f"the opencv engine runs on the CPU only, not {device!r}; use --engine torch")
    return OpenCVTVL1(check_params("tvl1", params or {}, TVL1_DEFAULTS, TVL1_RANGES))

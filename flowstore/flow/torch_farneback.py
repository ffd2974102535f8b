"""Batched Farnebäck optical flow in torch, following ``cv2.calcOpticalFlowFarneback``.

Gunnar Farnebäck, "Two-Frame Motion Estimation Based on Polynomial Expansion", SCIA 2003. This is an
independent re-implementation of the steps OpenCV takes, on ``B`` image pairs at once, any device:

* pyramid: level ``k`` has scale ``pyr_scale**k``; the full-resolution frame is Gaussian-blurred with
  sigma ``(1/scale - 1)/2`` (kernel ``round(5 sigma) | 1``, at least 3; reflect-101 border) and
  resized bilinearly to ``round(size * scale)``; levels whose size would drop below 32 px are not
  used. The flow is solved coarse to fine, upsampled bilinearly and divided by ``pyr_scale``;
* polynomial expansion of each level: separable Gaussian-weighted (``poly_sigma``) least-squares fit
  of ``x^T A x + b^T x + c`` over a ``2*poly_n+1`` neighbourhood (replicated border);
* displacement estimation: per pixel, ``A`` is the mean of both frames' ``A`` (frame 2 sampled at the
  displaced position, bilinearly; outside the image only frame 1's), ``b`` follows from the
  difference of the linear terms, the 5 px image border is down-weighted, and the normal equations
  are averaged over a ``winsize`` box (or Gaussian with ``flags & cv2.OPTFLOW_FARNEBACK_GAUSSIAN``)
  window and solved in closed form, ``iterations`` times per level.

``flags & cv2.OPTFLOW_USE_INITIAL_FLOW`` is not supported (there is no initial-flow argument).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .torch_tvl1 import resize_linear
from ..errors import InputError

OPTFLOW_USE_INITIAL_FLOW = 4
OPTFLOW_FARNEBACK_GAUSSIAN = 256
#: smallest pyramid level side, as in OpenCV
MIN_SIZE = 32
#: weights of the 5 outermost rows / columns in the displacement estimate (OpenCV's values)
_BORDER = (0.14, 0.14, 0.4472, 0.4472, 0.4472)

#: cv2.getGaussianKernel's fixed kernels used when sigma <= 0 and ksize <= 7
_SMALL_GAUSSIAN = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma)`` as float64."""
    if sigma <= 0 and ksize in _SMALL_GAUSSIAN:
        return np.array(_SMALL_GAUSSIAN[ksize], dtype=np.float64)
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _sep_filter(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Separable filter of (N, C, H, W) with a 1-D kernel (odd length) on both axes."""
    c = x.shape[1]
    r = kernel.numel() // 2
    if mode == "reflect" and (r >= x.shape[-1] or r >= x.shape[-2]):
        mode = "replicate"  # reflect-101 needs the image larger than the kernel radius
    kx = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), ky, groups=c)
    return F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), kx, groups=c)


def gaussian_blur(x: torch.Tensor, ksize: int, sigma: float) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (ksize, ksize), sigma)`` (reflect-101 border) of (N, 1, H, W)."""
    k = torch.as_tensor(gaussian_kernel(ksize, sigma), dtype=x.dtype, device=x.device)
    return _sep_filter(x, k, "reflect")


class _PolyExp:
    """Polynomial expansion kernels and the inverse-Gram constants for (poly_n, poly_sigma)."""

    def __init__(self, n: int, sigma: float, device, dtype=torch.float32):
        if sigma < np.finfo(np.float32).eps:
            sigma = n * 0.3
        x = np.arange(-n, n + 1, dtype=np.float64)
        g = np.exp(-(x * x) / (2 * sigma * sigma))
        g = (g / g.sum()).astype(np.float32).astype(np.float64)
        xg = x * g
        xxg = x * x * g
        # Gram matrix of the basis (1, x, y, x^2, y^2, xy) under the separable Gaussian weight
        gy, gx = np.meshgrid(g, g, indexing="ij")
        yy, xx = np.meshgrid(x, x, indexing="ij")
        w = gy * gx
        G = np.zeros((6, 6))
        G[0, 0] = w.sum()
        G[1, 1] = (w * xx**2).sum()
        G[3, 3] = (w * xx**4).sum()
        G[5, 5] = (w * xx**2 * yy**2).sum()
        G[2, 2] = G[0, 3] = G[0, 4] = G[3, 0] = G[4, 0] = G[1, 1]
        G[4, 4] = G[3, 3]
        G[3, 4] = G[4, 3] = G[5, 5]
        inv = np.linalg.inv(G)
        self.ig11, self.ig03, self.ig33, self.ig55 = inv[1, 1], inv[0, 3], inv[3, 3], inv[5, 5]
        self.n = n
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        # vertical pass: 1 image -> (sum g, sum y g, sum y^2 g)
        self.kv = torch.stack([t(g), t(xg), t(xxg)]).view(3, 1, -1, 1)
        # horizontal pass: 3 channels -> b1..b6 (1, x, y, x^2, y^2, xy moments)
        kh = torch.zeros(6, 3, 1, 2 * n + 1, dtype=dtype, device=device)
        kh[0, 0, 0] = t(g)  # b1: 1
        kh[1, 0, 0] = t(xg)  # b2: x
        kh[2, 1, 0] = t(g)  # b3: y
        kh[3, 0, 0] = t(xxg)  # b4: x^2
        kh[4, 2, 0] = t(g)  # b5: y^2
        kh[5, 1, 0] = t(xg)  # b6: xy
        self.kh = kh

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, 5, H, W): y and x linear terms, y^2, x^2, xy quadratic terms."""
        n = self.n
        rows = F.conv2d(F.pad(img, (0, 0, n, n), mode="replicate"), self.kv)
        b = F.conv2d(F.pad(rows, (n, n, 0, 0), mode="replicate"), self.kh)
        b1, b2, b3, b4, b5, b6 = b.unbind(1)
        return torch.stack(
            [
                b3 * self.ig11,
                b2 * self.ig11,
                b1 * self.ig03 + b5 * self.ig33,
                b1 * self.ig03 + b4 * self.ig33,
                b6 * self.ig55,
            ],
            1,
        )


def _border_weight(h: int, w: int, device, dtype) -> torch.Tensor:
    def axis(n):
        a = np.ones(n)
        for i in range(min(5, n)):
            a[i] *= _BORDER[i]
        for i in range(max(n - 5, 0), n):
            a[i] *= _BORDER[n - i - 1]
        return a

    return torch.as_tensor(np.outer(axis(h), axis(w)), dtype=dtype, device=device)


def _update_matrices(R0: torch.Tensor, R1: torch.Tensor, flow: torch.Tensor, border: torch.Tensor) -> torch.Tensor:
    """Normal-equation terms (G11, G12, G22, h1, h2) per pixel for the current flow (B, 2, H, W)."""
    b, _, h, w = R0.shape
    dx, dy = flow[:, 0], flow[:, 1]
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    fx = xs + dx
    fy = ys + dy
    x1 = torch.floor(fx)
    y1 = torch.floor(fy)
    inside = ((x1 >= 0) & (x1 <= w - 2) & (y1 >= 0) & (y1 <= h - 2)).unsqueeze(1)
    # bilinear sample of R1 at (fx, fy); only used where the 2x2 neighbourhood is inside
    grid = torch.stack([fx * (2.0 / max(w - 1, 1)) - 1.0, fy * (2.0 / max(h - 1, 1)) - 1.0], -1)
    R1w = F.grid_sample(R1, grid, mode="bilinear", padding_mode="border", align_corners=True)
    zero = torch.zeros_like(R0[:, :2])
    lin1 = torch.where(inside, R1w[:, :2], zero)
    quad_in = (R0[:, 2:] + R1w[:, 2:]) * R0.new_tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    quad_out = R0[:, 2:] * R0.new_tensor([1.0, 1.0, 0.5]).view(1, 3, 1, 1)
    r4, r5, r6 = torch.where(inside, quad_in, quad_out).unbind(1)
    r2, r3 = ((R0[:, :2] - lin1) * 0.5).unbind(1)
    r2 = r2 + r4 * dy + r6 * dx
    r3 = r3 + r6 * dy + r5 * dx
    r2, r3, r4, r5, r6 = (t * border for t in (r2, r3, r4, r5, r6))
    return torch.stack([r4 * r4 + r6 * r6, (r4 + r5) * r6, r5 * r5 + r6 * r6, r4 * r2 + r6 * r3, r6 * r2 + r5 * r3], 1)


def _solve(M: torch.Tensor) -> torch.Tensor:
    """Flow (B, 2, H, W) from the window-averaged terms (2x2 system in closed form). OpenCV uses
    doubles here; float32 gives the same flow to ~1e-5 px on the test pairs and runs on every
    device (MPS has no float64)."""
    g11, g12, g22, h1, h2 = M.unbind(1)
    idet = 1.0 / (g11 * g22 - g12 * g12 + 1e-3)
    return torch.stack([(g11 * h2 - g12 * h1) * idet, (g22 * h1 - g12 * h2) * idet], 1)


@torch.no_grad()
def farneback_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    *,
    pyr_scale: float = 0.5,
    levels: int = 3,
    winsize: int = 15,
    iterations: int = 3,
    poly_n: int = 5,
    poly_sigma: float = 1.2,
    flags: int = 0,
) -> torch.Tensor:
    """Farnebäck flow from ``i0`` to ``i1``, both ``(B, H, W)`` (uint8 or float, 0..255).

    Returns float32 ``(B, 2, H, W)`` (u, v) in pixels. Parameters are those of
    ``cv2.calcOpticalFlowFarneback`` (poly_n is the neighbourhood radius, 5 or 7 in practice).
    """
    if i0.shape != i1.shape or i0.dim() != 3:
        raise InputError(f"expected two (B, H, W) tensors of the same shape, got {tuple(i0.shape)} and {tuple(i1.shape)}")
    if not 0.0 < pyr_scale < 1.0:
        raise InputError(f"pyr_scale must be in (0, 1), got {pyr_scale}")
    if flags & OPTFLOW_USE_INITIAL_FLOW:
        raise InputError("flags & OPTFLOW_USE_INITIAL_FLOW is not supported by the torch engine")
    if winsize < 1 or iterations < 1 or poly_n < 1:
        raise InputError(f"winsize, iterations and poly_n must be >= 1, got {winsize}, {iterations}, {poly_n}")
    device = i0.device
    dtype = torch.float32
    b, H, W = i0.shape
    frames = torch.stack([i0, i1], 1).to(dtype).reshape(2 * b, 1, H, W)

    # number of coarser levels actually used: stop before a level would be smaller than MIN_SIZE
    n_levels = 0
    scale = 1.0
    while n_levels < levels:
        scale *= pyr_scale
        if W * scale < MIN_SIZE or H * scale < MIN_SIZE:
            break
        n_levels += 1

    poly = _PolyExp(poly_n, poly_sigma, device, dtype)
    m = winsize // 2
    if flags & OPTFLOW_FARNEBACK_GAUSSIAN:
        sig = m * 0.3
        kw = np.exp(-(np.arange(-m, m + 1) ** 2) / (2 * sig * sig)) if m > 0 else np.ones(1)
        kw = kw / kw.sum()
    else:
        # box of 2*(winsize//2)+1 taps normalised by winsize^2, as OpenCV does (also for even winsize)
        kw = np.full(2 * m + 1, 1.0 / winsize)
    win_kernel = torch.as_tensor(kw, dtype=dtype, device=device)

    flow = None
    for k in range(n_levels, -1, -1):
        scale = 1.0
        for _ in range(k):
            scale *= pyr_scale
        sigma = (1.0 / scale - 1.0) * 0.5
        ksize = max(int(round(sigma * 5)) | 1, 3)
        width, height = int(round(W * scale)), int(round(H * scale))
        level = resize_linear(gaussian_blur(frames, ksize, sigma), (height, width))
        R = poly(level).view(b, 2, 5, height, width)
        R0, R1 = R[:, 0], R[:, 1]
        if flow is None:
            flow = torch.zeros(b, 2, height, width, device=device, dtype=dtype)
        else:
            flow = resize_linear(flow, (height, width)) * (1.0 / pyr_scale)
        border = _border_weight(height, width, device, dtype)
        M = _update_matrices(R0, R1, flow, border)
        for it in range(iterations):
            flow = _solve(_sep_filter(M, win_kernel, "replicate"))
            if it < iterations - 1:
                M = _update_matrices(R0, R1, flow, border)
    return flow.contiguous()

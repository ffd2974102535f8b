"""Batched dual TV-L1 optical flow in torch, following OpenCV's ``cv2.optflow.DualTVL1OpticalFlow``.

The algorithm is Zach, Pock & Bischof (2007) in the formulation of Sánchez Pérez, Meinhardt-Llopis
& Facciolo, "TV-L1 Optical Flow Estimation", IPOL 2013, which is what OpenCV implements. This is an
independent re-implementation of the same steps, on ``B`` image pairs at once, on any torch device:

* pyramid of ``nscales`` levels, each level the bilinear resize (OpenCV ``INTER_LINEAR`` sampling
  positions, no pre-smoothing) of the previous one by ``scaleStep``; levels smaller than 16 px are
  dropped; the flow is solved coarse to fine and upsampled bilinearly and divided by ``scaleStep``;
* per level, ``warps`` warps: ``I1`` and its centred gradient are warped by the current flow with
  bicubic interpolation (zeros outside the image, like ``cv2.remap``'s default constant border), and
  the data term is linearised around that flow;
* per warp, up to ``outerIterations`` outer iterations, each starting with a ``medianFiltering``
  median filter of the flow, and each running up to ``innnerIterations`` inner iterations of:
  thresholding step (v), divergence of the dual variable, flow update (u), forward gradient of u,
  dual ROF update (p). The dual variable is reset per level, not per warp;
* a warp stops early once the squared flow update summed over the image is at most
  ``epsilon**2 * H * W`` (OpenCV's ``scaledEpsilon``).

**Per-sample stopping.** Samples of a batch stop at different iterations; the stopping is exact
per sample, as in OpenCV, not a fixed iteration count. Each sample has its own "still iterating
in this warp" flag; a sample stops right after the inner iteration whose update was small enough,
and skips the rest of the warp (including the remaining median filters). Stopped samples are
dropped from the working batch (gathered out with ``index_select``, written back with
``index_copy``), so they cost nothing afterwards. Knowing which samples stopped needs a
device-to-host sync: on the CPU this is done after every inner iteration; on accelerators only
every ``sync_every`` (default 10) iterations, and in between a device-side mask freezes stopped
samples (``torch.where``), so the result is the same either way. A sample's flow therefore does
not depend on what else is in its batch (the tests check batch == one at a time).

**The fused path** (``fused=True``, the default on CUDA; the CPU keeps the path above, bit for
bit). A GPU runs the ~30-70 k small eager ops of a batch in ~5 us each, so it is launch-bound.
The fused path has no compaction and no host sync inside the iteration loop: one *outer
iteration* (the median filter and ``innnerIterations`` inner iterations, with a device-side
"still iterating" mask per sample, so the per-sample stopping stays exact) is one call of
:func:`outer_iteration`, compiled with ``torch.compile`` and, on CUDA, captured once per shape in
a CUDA graph (one launch). The only sync is a fixed-cadence check after each outer iteration
(``active.any()``: at most ``outerIterations - 1`` per warp) that ends the warp once every sample
has stopped; a warp usually stops within its first outer iteration. Stopped samples still cost
compute until the whole batch has stopped (the price of launching nothing from the host).

``gamma != 0`` adds OpenCV's third, illumination-change component ``u3`` (``gamma * u3`` in the
data term, TV-regularised, not scaled between levels, not returned).

Intensities are on the 0..255 scale as in OpenCV (``lambda_`` depends on it): uint8 input is used
as is, float input is taken as 0..1 and multiplied by 255, exactly like ``DualTVL1OpticalFlow.calc``.
"""
from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import InputError

#: float32 machine epsilon; OpenCV skips the thresholding step where |grad I1|^2 is below it.
_FLT_EPS = float(torch.finfo(torch.float32).eps)


# --------------------------------------------------------------------------------------------
# image operators (all on (B, C, H, W) float tensors)


def _linear_taps(n_in: int, n_out: int, src_per_dst: float, device) -> tuple[torch.Tensor, ...]:
    """Index pairs and weights of OpenCV's INTER_LINEAR resize along one axis (computed in float64
    on the host, so that it also works on devices without float64)."""
    s = (np.arange(n_out, dtype=np.float64) + 0.5) * src_per_dst - 0.5
    i0 = np.floor(s)
    frac = s - i0
    i0 = i0.astype(np.int64)
    low = i0 < 0
    frac[low] = 0.0
    i0[low] = 0
    high = i0 >= n_in - 1
    frac[high] = 0.0
    i0[high] = n_in - 1
    i1 = np.minimum(i0 + 1, n_in - 1)
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return as_t(i0), as_t(i1), as_t(frac.astype(np.float32))


def resize_linear(
    x: torch.Tensor, size: tuple[int, int], inv_scale: tuple[float, float] | None = None
) -> torch.Tensor:
    """Bilinear resize of ``(..., H, W)`` to ``size=(h, w)`` with ``cv2.resize`` INTER_LINEAR sampling.

    ``inv_scale=(sy, sx)`` are the source-per-destination steps; by default ``H/h`` and ``W/w`` (what
    cv2 uses when given an explicit size). Pass ``1/fy, 1/fx`` to mimic ``cv2.resize(..., fx, fy)``.
    """
    h_in, w_in = x.shape[-2:]
    h, w = size
    sy, sx = inv_scale if inv_scale is not None else (h_in / h, w_in / w)
    y0, y1, fy = _linear_taps(h_in, h, sy, x.device)
    x0, x1, fx = _linear_taps(w_in, w, sx, x.device)
    fy = fy.to(x.dtype)[:, None]
    fx = fx.to(x.dtype)
    rows = torch.lerp(x.index_select(-2, y0), x.index_select(-2, y1), fy)
    return torch.lerp(rows.index_select(-1, x0), rows.index_select(-1, x1), fx)


def centered_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * (x[i+1] - x[i-1]) with the border pixel repeated (OpenCV's centeredGradient)."""
    xr = torch.cat([x[..., 1:], x[..., -1:]], -1)
    xl = torch.cat([x[..., :1], x[..., :-1]], -1)
    yd = torch.cat([x[..., 1:, :], x[..., -1:, :]], -2)
    yu = torch.cat([x[..., :1, :], x[..., :-1, :]], -2)
    return 0.5 * (xr - xl), 0.5 * (yd - yu)


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u[i+1] - u[i], zero on the last column / row."""
    ux = F.pad(u[..., 1:] - u[..., :-1], (0, 1))
    uy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return ux, uy


def divergence(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence (p[i] - p[i-1], with p[-1] = 0), the negative adjoint of
    :func:`forward_gradient`."""
    return p1 - F.pad(p1[..., :-1], (1, 0)) + p2 - F.pad(p2[..., :-1, :], (0, 0, 1, 0))


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for ``n`` a power of two."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=None)
def _selection_network(n: int, outputs: tuple[int, ...]) -> tuple[tuple[int, int, bool, bool], ...]:
    """Compare-exchange steps ``(i, j, keep_min, keep_max)`` that put ranks ``outputs`` of ``n`` values
    in place: Batcher's network for the next power of two (the padding is +inf, so comparators that
    touch it are no-ops), pruned backwards to the steps the wanted outputs depend on."""
    size = 1
    while size < n:
        size *= 2
    steps = [(i, j) for i, j in _batcher_pairs(size) if j < n]
    needed = set(outputs)
    kept = []
    for i, j in reversed(steps):
        if i in needed or j in needed:
            kept.append((i, j, i in needed, j in needed))
            needed |= {i, j}
    return tuple(reversed(kept))


def _run_network(values: list[torch.Tensor], network) -> list[torch.Tensor]:
    values = list(values)
    for i, j, keep_min, keep_max in network:
        a, b = values[i], values[j]
        if keep_min:
            values[i] = torch.minimum(a, b)
        if keep_max:
            values[j] = torch.maximum(a, b)
    return values


def median_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k median (k odd) with replicated borders, like ``cv2.medianBlur``, of ``(..., H, W)``.

    Elementwise min/max only (no unfold, no sort), so it runs on any device and fuses under
    torch.compile: sort every vertical k-window once (shared by all windows of a row); the k x k
    window is then column-sorted, and sorting its rows too leaves it sorted both ways, so an
    element at (i, j) has at least (i+1)(j+1)-1 values below it and (k-i)(k-j)-1 above it. Only the
    few elements that can be the median need their row position, and the median is a fixed-rank
    element of those candidates (all others are known to lie below or above it).
    """
    if k <= 1:
        return x
    r = k // 2
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    xp = F.pad(flat, (r, r, r, r), mode="replicate").view(*x.shape[:-2], h + 2 * r, w + 2 * r)
    cols = _run_network([xp[..., i : i + h, :] for i in range(k)], _selection_network(k, tuple(range(k))))
    half = (k * k + 1) // 2  # the median is the half-th smallest
    candidates = []
    below = 0
    for i in range(k):
        js = [j for j in range(k) if (i + 1) * (j + 1) <= half and (k - i) * (k - j) <= half]
        below += sum(1 for j in range(k) if (k - i) * (k - j) > half)
        if not js:
            continue
        row = _run_network([cols[i][..., j : j + w] for j in range(k)], _selection_network(k, tuple(js)))
        candidates += [row[j] for j in js]
    rank = half - 1 - below
    return _run_network(candidates, _selection_network(len(candidates), (rank,)))[rank]


def warp_bicubic(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``img`` (B, C, H, W) at (x + u, y + v), bicubic, zeros outside (``cv2.remap`` default)."""
    b, _, h, w = img.shape
    ys = torch.arange(h, device=img.device, dtype=img.dtype).view(1, h, 1)
    xs = torch.arange(w, device=img.device, dtype=img.dtype).view(1, 1, w)
    gx = (2.0 * (xs + flow[:, 0]) + 1.0) / w - 1.0
    gy = (2.0 * (ys + flow[:, 1]) + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(img, grid, mode="bicubic", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------------
# one inner iteration (the part worth fusing with torch.compile)


def _inner_step(u, p1, p2, coef, rho_c, neg_inv_grad, l_t: float, theta: float, taut: float):
    """One inner iteration for all samples.

    u, p1, p2: (B, C, H, W) flow components (C = 2, or 3 with gamma) and the x / y parts of the dual
    variable; coef: (B, C, H, W) data-term coefficients (I1wx, I1wy[, gamma]); rho_c: (B, 1, H, W);
    neg_inv_grad: -1 / |grad I1w|^2, or 0 where that is below float epsilon.
    Returns the new u, p1, p2 and the per-sample sum of squared flow updates, shape (B,).
    """
    # thresholding step: v = u + clamp(-rho / |grad|^2, -l_t, l_t) * grad (the three cases of TH)
    rho = rho_c + (coef * u).sum(1, keepdim=True)
    step = (rho * neg_inv_grad).clamp(-l_t, l_t)
    v = torch.addcmul(u, step, coef)
    # u = v + theta * div(p)
    div = p1 + p2
    div[..., 1:] -= p1[..., :-1]
    div[..., 1:, :] -= p2[..., :-1, :]
    u_new = torch.add(v, div, alpha=theta)
    d = u_new - u
    err = (d * d).sum((1, 2, 3))
    # p = (p + taut * grad u) / (1 + taut * |grad u|)
    ux, uy = forward_gradient(u_new)
    ng = torch.sqrt(torch.addcmul(ux * ux, uy, uy)) * taut + 1.0
    p1 = torch.add(p1, ux, alpha=taut) / ng
    p2 = torch.add(p2, uy, alpha=taut) / ng
    return u_new, p1, p2, err


def _inner_step_functional(u, p1, p2, coef, rho_c, neg_inv_grad, l_t: float, theta: float, taut: float):
    """:func:`_inner_step` without in-place slice updates, which is what torch.compile fuses well
    (the in-place form is the faster one in eager mode)."""
    rho = rho_c + (coef * u).sum(1, keepdim=True)
    step = (rho * neg_inv_grad).clamp(-l_t, l_t)
    v = u + step * coef
    u_new = v + theta * divergence(p1, p2)
    d = u_new - u
    err = (d * d).sum((1, 2, 3))
    ux, uy = forward_gradient(u_new)
    ng = torch.sqrt(ux * ux + uy * uy) * taut + 1.0
    return u_new, (p1 + taut * ux) / ng, (p2 + taut * uy) / ng, err


_COMPILED: dict[str, Callable] = {}


def _get_step(compile: bool) -> Callable:
    if not compile:
        return _inner_step
    if "step" not in _COMPILED:
        # dynamic=True: one graph for every pyramid level / batch size instead of one per shape
        _COMPILED["step"] = torch.compile(_inner_step_functional, dynamic=True)
    return _COMPILED["step"]


def masked_median(u, active, median: int):
    """The outer iteration's median filter of the flow components, only for samples still active."""
    med = median_filter(u[:, :2], median)
    med = torch.where(active.view(-1, 1, 1, 1), med, u[:, :2])
    return torch.cat([med, u[:, 2:]], 1) if u.shape[1] > 2 else med


def _masked_step(step_fn, u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps, l_t, theta, taut):
    """One inner iteration with the per-sample mask: samples that stopped keep their values;
    ``count`` counts the iterations each sample ran."""
    u_new, p1_new, p2_new, err = step_fn(u, p1, p2, coef, rho_c, neg_inv_grad, l_t, theta, taut)
    m = active.view(-1, 1, 1, 1)
    return (torch.where(m, u_new, u), torch.where(m, p1_new, p1), torch.where(m, p2_new, p2),
            active & (err > scaled_eps), count + active.to(count.dtype))


def masked_step(u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps, l_t, theta, taut):
    """:func:`_masked_step` of :func:`_inner_step` (eager: bit-for-bit the CPU path's arithmetic)."""
    return _masked_step(_inner_step, u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps, l_t, theta, taut)


def masked_step_functional(u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps, l_t, theta, taut):
    """:func:`_masked_step` of :func:`_inner_step_functional`, the form torch.compile fuses."""
    return _masked_step(_inner_step_functional, u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps,
                        l_t, theta, taut)


def outer_iteration(step, median_fn, u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps, *,
                    n_inner: int, median: int, l_t: float, theta: float, taut: float):
    """One outer iteration of all samples: median filter, then ``n_inner`` masked inner
    iterations. No host sync: this is what a CUDA graph captures."""
    if median > 1:
        u = median_fn(u, active, median)
    for _ in range(n_inner):
        u, p1, p2, active, count = step(u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps,
                                        l_t, theta, taut)
    return u, p1, p2, active, count


def _compiled(fn: Callable, backend: str) -> Callable:
    key = f"{fn.__name__}:{backend}"
    if key not in _COMPILED:
        # dynamic=True: one graph for every pyramid level and batch size (> 1) instead of one per shape
        _COMPILED[key] = _EagerOnFailure(torch.compile(fn, dynamic=True, backend=backend), fn)
    return _COMPILED[key]


class _EagerOnFailure:
    """A compiled function that falls back to ``eager`` (with one warning) where compilation
    fails, e.g. no C++ compiler or no triton on this machine."""

    def __init__(self, compiled: Callable, eager: Callable):
        self.compiled, self.eager, self.failed = compiled, eager, False

    def __call__(self, *args):
        if not self.failed:
            try:
                with warnings.catch_warnings():  # dynamo notes that it traces through the lru_cache of the median's network
                    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
                    return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly instead
                self.failed = True
                warnings.warn(f"torch.compile of {self.eager.__name__} failed ({type(exc).__name__}: "
                              f"{str(exc)[:300]}); running it eagerly", RuntimeWarning, stacklevel=2)
        return self.eager(*args)


class _GraphedOuter:
    """:func:`outer_iteration` captured in a CUDA graph for one set of input shapes: inputs are
    copied into static buffers, one replay runs the whole outer iteration; the outputs are the
    graph's static buffers (valid until the next replay)."""

    def __init__(self, fn: Callable, args: tuple[torch.Tensor, ...]):
        self.static_in = tuple(a.clone() for a in args)
        side = torch.cuda.Stream(args[0].device)
        side.wait_stream(torch.cuda.current_stream(args[0].device))
        with torch.cuda.stream(side):  # warm-up (compilation, autotuning) outside the capture
            for _ in range(2):
                fn(*self.static_in)
        torch.cuda.current_stream(args[0].device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(*self.static_in)

    def __call__(self, *args):
        for static, a in zip(self.static_in, args):
            if static.data_ptr() != a.data_ptr():
                static.copy_(a)
        self.graph.replay()
        return self.static_out


#: CUDA graphs by (shapes, device, settings); least recently used dropped beyond the limit
_GRAPHS: OrderedDict = OrderedDict()
_MAX_GRAPHS = 48
_GRAPHS_FAILED: set = set()


def _graphed_call(fn: Callable, key: tuple, args: tuple[torch.Tensor, ...]):
    """Run ``fn(*args)`` through its CUDA graph (captured on first use); eagerly, with one
    warning, where capture fails."""
    if key[1:] in _GRAPHS_FAILED:
        return fn(*args)
    graphed = _GRAPHS.get(key)
    if graphed is None:
        try:
            graphed = _GraphedOuter(fn, args)
        except Exception as exc:  # noqa: BLE001 - e.g. an op that cannot be captured: run without graphs
            _GRAPHS_FAILED.add(key[1:])
            warnings.warn(f"CUDA graph capture of the TV-L1 outer iteration failed ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); running without CUDA graphs", RuntimeWarning, stacklevel=2)
            return fn(*args)
        _GRAPHS[key] = graphed
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end(key)
    return graphed(*args)


def _solve_warp_fused(run_outer, u, p1, p2, consts, n_outer: int):
    """The warp's outer iterations on the whole batch, masked; one host sync per outer iteration
    (the fixed-cadence check), none inside it. Returns u, p1, p2 and the per-sample iteration
    counts (a device tensor)."""
    active = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    count = torch.zeros(u.shape[0], dtype=torch.int32, device=u.device)
    for k in range(n_outer):
        u, p1, p2, active, count = run_outer(u, p1, p2, active, count, *consts)
        if k + 1 < n_outer and not bool(active.any()):  # the one sync of an outer iteration
            break
    # clones: the outputs of a CUDA graph are overwritten by its next replay
    return u.clone(), p1.clone(), p2.clone(), count


def _fused_runner(device: torch.device, compile: bool | str, cuda_graphs: bool, *, n_inner: int, median: int,
                  l_t: float, theta: float, taut: float) -> Callable:
    """``run_outer(u, p1, p2, active, count, coef, rho_c, neg_inv_grad, scaled_eps)`` for the
    fused path: :func:`outer_iteration` of the compiled (or eager) step and median, through a
    CUDA graph when asked."""
    if compile:
        backend = compile if isinstance(compile, str) else "inductor"
        step, med = _compiled(masked_step_functional, backend), _compiled(masked_median, backend)
    else:
        step, med = masked_step, masked_median
    fn = functools.partial(outer_iteration, step, med, n_inner=n_inner, median=median, l_t=l_t, theta=theta, taut=taut)
    if not cuda_graphs:
        return fn
    settings = (str(device), str(compile), n_inner, median, l_t, theta, taut)

    def run_outer(*args):
        shapes = tuple(tuple(a.shape) for a in args)
        return _graphed_call(fn, (shapes, *settings), args)

    return run_outer


# --------------------------------------------------------------------------------------------


def pyramid_sizes(h: int, w: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Level sizes as OpenCV builds them (round each level from the previous; stop below 16 px)."""
    sizes = [(h, w)]
    for _ in range(1, nscales):
        ph, pw = sizes[-1]
        nh, nw = round(ph * scale_step), round(pw * scale_step)
        if nh < 16 or nw < 16:
            break
        sizes.append((nh, nw))
    return sizes


def _solve_warp(step_fn, u, p1, p2, consts, scalars, scaled_eps, n_outer, n_inner, median, sync_every):
    """Outer/inner iterations of one warp with per-sample epsilon stopping.

    Samples that have stopped are dropped from the working batch ("compaction", done at every
    host sync) so they cost nothing afterwards; between syncs (accelerators) a device-side mask
    freezes them instead. Either way a sample stops right after the iteration whose update was
    small enough and skips the rest of the warp, as in OpenCV. Returns the updated u, p1, p2 and
    the number of inner iterations run.
    """
    full = [u, p1, p2]
    idx = None  # indices of the working samples into the full batch; None = all of them
    work = [u, p1, p2]
    cs = consts
    active = None  # device mask over the working samples; None = all of them known active
    since_sync = 0
    n_iter = 0

    def write_back():
        if idx is None:
            full[:] = work
        else:
            full[:] = [f.index_copy(0, idx, w) for f, w in zip(full, work)]

    def sync() -> bool:
        """Drop stopped samples from the working batch; False once none is left."""
        nonlocal idx, work, cs, active, since_sync
        since_sync = 0
        if active is None:
            return True
        keep = active.tolist()
        if all(keep):
            active = None
            return True
        write_back()
        if not any(keep):
            return False
        sel = active.nonzero().squeeze(1)
        idx = sel if idx is None else idx.index_select(0, sel)
        work = [t.index_select(0, idx) for t in full]
        cs = tuple(t.index_select(0, idx) for t in consts)
        active = None
        return True

    for _ in range(n_outer):
        us, p1s, p2s = work
        if median > 1:
            med = median_filter(us[:, :2], median)
            if active is not None:  # stopped since the last sync: no more filtering for them
                med = torch.where(active.view(-1, 1, 1, 1), med, us[:, :2])
            us = torch.cat([med, us[:, 2:]], 1) if us.shape[1] > 2 else med
        for _ in range(n_inner):
            u_new, p1_new, p2_new, err = step_fn(us, p1s, p2s, *cs, *scalars)
            n_iter += 1
            if active is None:
                us, p1s, p2s = u_new, p1_new, p2_new
                active = err > scaled_eps
            else:
                m = active.view(-1, 1, 1, 1)
                us = torch.where(m, u_new, us)
                p1s = torch.where(m, p1_new, p1s)
                p2s = torch.where(m, p2_new, p2s)
                active = active & (err > scaled_eps)
            since_sync += 1
            if since_sync >= sync_every:
                work = [us, p1s, p2s]
                if not sync():
                    return (*full, n_iter)
                us, p1s, p2s = work
        work = [us, p1s, p2s]
        if since_sync and not sync():
            return (*full, n_iter)
    write_back()
    return (*full, n_iter)


@torch.no_grad()
def tvl1_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    *,
    tau: float = 0.25,
    lambda_: float = 0.15,
    theta: float = 0.3,
    nscales: int = 5,
    warps: int = 5,
    epsilon: float = 0.01,
    innnerIterations: int = 30,
    outerIterations: int = 10,
    scaleStep: float = 0.8,
    gamma: float = 0.0,
    medianFiltering: int = 5,
    compile: bool | str | None = None,
    fused: bool | None = None,
    cuda_graphs: bool | None = None,
    sync_every: int | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """TV-L1 flow from ``i0`` to ``i1``, both ``(B, H, W)``: uint8, or float in 0..1 (scaled by 255
    as OpenCV does, since ``lambda_`` assumes the 0..255 range).

    Returns float32 ``(B, 2, H, W)`` (u, v) in pixels on the input's device. Parameter names and
    defaults are OpenCV's (``innnerIterations`` with its three n's, ``lambda_``). ``stats``, if given,
    receives the number of inner iterations run per level (on the fused path: one extra sync per warp).

    Run settings (no effect on the result beyond float rounding): ``fused`` (default: on CUDA only)
    selects the fused path of the module docstring; ``compile`` (default: on the fused path on CUDA)
    runs the inner iteration through ``torch.compile`` (a backend name such as ``"aot_eager"`` picks
    that backend); ``cuda_graphs`` (default: on the fused path on CUDA) replays each outer iteration
    as one CUDA graph. ``sync_every`` is the unfused path's compaction cadence (default 1 on the CPU,
    10 elsewhere).
    """
    if i0.shape != i1.shape or i0.dim() != 3:
        raise InputError(f"expected two (B, H, W) tensors of the same shape, got {tuple(i0.shape)} and {tuple(i1.shape)}")
    if medianFiltering > 1 and medianFiltering % 2 == 0:
        raise InputError(f"medianFiltering must be odd (or <= 1 to disable), got {medianFiltering}")
    if not 0.0 < scaleStep < 1.0 and nscales > 1:
        raise InputError(f"scaleStep must be in (0, 1), got {scaleStep}")
    device = i0.device
    if fused is None:
        fused = device.type == "cuda"
    if compile is None:
        compile = fused and device.type == "cuda"
    if cuda_graphs is None:
        cuda_graphs = fused and device.type == "cuda"
    if cuda_graphs and (not fused or device.type != "cuda"):
        raise InputError(f"cuda_graphs needs the fused path on a CUDA device (got fused={fused}, device {device})")
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else 10
    use_gamma = gamma != 0.0
    n_comp = 3 if use_gamma else 2
    l_t = float(lambda_ * theta)
    taut = float(tau / theta)
    theta = float(theta)
    if fused:
        run_outer = _fused_runner(device, compile, bool(cuda_graphs), n_inner=innnerIterations, median=medianFiltering,
                                  l_t=l_t, theta=theta, taut=taut)
    else:
        step_fn = _get_step(bool(compile))

    b, h, w = i0.shape
    sizes = pyramid_sizes(h, w, nscales, scaleStep)
    frames = torch.stack([i0, i1], 1).to(torch.float32)  # (B, 2, H, W)
    if i0.is_floating_point():  # like OpenCV: uint8 is used as is, float images are taken as 0..1
        frames = frames * 255.0
    pyr = [frames]
    for lh, lw in sizes[1:]:
        pyr.append(resize_linear(pyr[-1], (lh, lw), (1.0 / scaleStep, 1.0 / scaleStep)))

    u = torch.zeros(b, n_comp, *sizes[-1], device=device, dtype=torch.float32)
    for level in range(len(sizes) - 1, -1, -1):
        lh, lw = sizes[level]
        if u.shape[-2:] != (lh, lw):
            flow = resize_linear(u[:, :2], (lh, lw)) * (1.0 / scaleStep)
            parts = [flow]
            if use_gamma:
                parts.append(resize_linear(u[:, 2:], (lh, lw)))
            u = torch.cat(parts, 1)
        I0 = pyr[level][:, :1]
        I1 = pyr[level][:, 1:]
        scaled_eps = float(epsilon * epsilon * lh * lw)
        if fused:  # a device tensor: one compiled graph for every level, not one per threshold
            scaled_eps_t = torch.tensor(scaled_eps, dtype=torch.float32, device=device)
        I1x, I1y = centered_gradient(I1)
        I1stack = torch.cat([I1, I1x, I1y], 1)
        p1 = torch.zeros_like(u)
        p2 = torch.zeros_like(u)
        n_iter = 0
        for _ in range(warps):
            warped = warp_bicubic(I1stack, u)
            I1w, coef_xy = warped[:, :1], warped[:, 1:]
            grad = coef_xy.square().sum(1, keepdim=True)
            rho_c = I1w - (coef_xy * u[:, :2]).sum(1, keepdim=True) - I0
            coef = coef_xy
            if use_gamma:
                coef = torch.cat([coef_xy, torch.full_like(I1w, gamma)], 1)
            # OpenCV skips the thresholding step where |grad|^2 <= FLT_EPSILON; so do we (step 0)
            big = grad > _FLT_EPS
            neg_inv_grad = torch.where(big, -1.0 / torch.where(big, grad, torch.ones_like(grad)), 0.0)
            if fused:
                u, p1, p2, count = _solve_warp_fused(run_outer, u, p1, p2, (coef, rho_c, neg_inv_grad, scaled_eps_t),
                                                     outerIterations)
                n_iter += int(count.max()) if stats is not None else 0
                continue
            u, p1, p2, n = _solve_warp(
                step_fn, u, p1, p2, (coef, rho_c, neg_inv_grad), (l_t, theta, taut), scaled_eps,
                outerIterations, innnerIterations, medianFiltering, sync_every,
            )
            n_iter += n
        if stats is not None:
            stats.setdefault("inner_iterations", []).append(n_iter)
    return u[:, :2].contiguous()

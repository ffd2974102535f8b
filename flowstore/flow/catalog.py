"""Facts about each flow method and engine: what it needs, where it runs, how fast and accurate it
is, with the source of every number; read by ``flowstore methods``, the ptlflow engine (the
minimum frame sizes) and the registry (the learned short names). Plain data: no torch, no numpy."""
from __future__ import annotations

#: ptlflow's published benchmark, as quoted in issue 15: RTX 3090, 500x1000, batch 1, fp16;
#: EPE of its "things" checkpoints on the Sintel training set (clean)
PTLFLOW_TABLE = "ptlflow's published benchmark (RTX 3090, 500x1000, batch 1, fp16; Sintel clean EPE of the things checkpoint)"
OURS = "docs/benchmarks.md (project machine, 2 CPU cores, 340x256; EPE: mean over ../shared/data/flow_gt)"
#: the CPU figures of the learned models: benchmarks/learned_cpu.py, random weights (speed only),
#: torch's 2 threads on a machine loaded by other jobs (load 4-7): good to a factor of ~2
OURS_LEARNED = ("docs/benchmarks.md 'Learned models on the CPU' (benchmarks/learned_cpu.py, 2 CPU cores loaded by "
                "other jobs, 340x256, random weights; good to a factor of ~2)")

#: ptlflow model -> (ms per pair, Sintel clean EPE) from :data:`PTLFLOW_TABLE`
PTLFLOW_PUBLISHED = {
    "neuflow2": (12.1, 1.27),
    "rapidflow": (13.8, 1.58),
    "sea_raft_s": (27.8, 1.28),
    "gmflow": (28.2, 1.50),
    "raft": (85.0, 1.46),
}

#: the learned model recommended for bulk extraction (why: docs/benchmarks.md, "Which learned model")
RECOMMENDED_LEARNED = "neuflow2"

#: The learned models with a short name (``neuflow2`` = ``ptlflow:neuflow2``), in the order
#: ``flowstore methods`` lists them. Per model: the paper, the licence of ptlflow's port (its
#: LICENSE file), what it needs beyond the ptlflow extra (checked in ptlflow 0.4.2's source),
#: ``things_ckpt``: ptlflow's published FlyingThings checkpoint (its releases, tag weights1),
#: ``min_side``: the smallest frame side (pixels) it computes finite flow for (None: any side
#: down to 32 px, the smallest tried), and ``cpu_pairs_per_s``: our measurement at 340x256,
#: batch 1 and batch 8 (:data:`OURS_LEARNED`).
LEARNED_MODELS = {
    "neuflow2": {
        "things_ckpt": "neuflow2-things-6ed47437.ckpt",
        "paper": "NeuFlow v2 (Zhang et al., 2024)", "licence": "Apache-2.0",
        "needs": "nothing more: pure torch",
        "min_side": None, "cpu_pairs_per_s": (0.88, 1.26)},
    "neuflow": {
        "things_ckpt": "neuflow-things-c402aa7a.ckpt",
        "paper": "NeuFlow (Zhang et al., 2024)", "licence": "Apache-2.0",
        "needs": "nothing more: uses spatial-correlation-sampler (compiled) if installed, else ptlflow's pure-torch sampler",
        "min_side": None, "cpu_pairs_per_s": (1.03, 2.33)},
    "rapidflow": {
        "things_ckpt": "rapidflow-things-0377c8fa.ckpt",
        "paper": "RAPIDFlow (Morimitsu et al., ICRA 2024)", "licence": "Apache-2.0",
        "needs": "nothing more: pure torch (its ONNX/TensorRT scripts are not used)",
        "min_side": 33, "cpu_pairs_per_s": (0.41, 1.28)},
    "sea_raft_s": {
        "things_ckpt": "sea_raft_s-things-a15c1713.ckpt",
        "paper": "SEA-RAFT small (Wang et al., ECCV 2024)", "licence": "BSD-3-Clause",
        "needs": "nothing more: alternate_corr=True would need the compiled alt_cuda_corr (not installed)",
        "min_side": 121, "cpu_pairs_per_s": (0.21, 0.37)},
    "gmflow": {
        "things_ckpt": "gmflow-things-5a18a9e8.ckpt",
        "paper": "GMFlow (Xu et al., CVPR 2022)", "licence": "Apache-2.0",
        "needs": "nothing more: pure torch",
        "min_side": None, "cpu_pairs_per_s": (0.27, 0.27)},
    "raft": {
        "things_ckpt": "raft-things-802bbcfd.ckpt",
        "paper": "RAFT (Teed & Deng, ECCV 2020)", "licence": "BSD-3-Clause",
        "needs": "nothing more: alternate_corr=True would need the compiled alt_cuda_corr (not installed)",
        "min_side": 121, "cpu_pairs_per_s": (0.04, 0.08)},
    "raft_small": {
        "things_ckpt": "raft_small-things-b7d9f997.ckpt",
        "paper": "RAFT small (Teed & Deng, ECCV 2020)", "licence": "BSD-3-Clause",
        "needs": "nothing more: alternate_corr=True would need the compiled alt_cuda_corr (not installed)",
        "min_side": 121, "cpu_pairs_per_s": (0.06, 0.38)},
}

#: Why a model has a ``min_side``: below it the coarsest level of its correlation pyramid is
#: 1 pixel wide and ptlflow's ``bilinear_sampler`` normalises coordinates by ``W - 1 = 0``
#: (NaN at any weights); SEA-RAFT's pooling raises instead. The same holds for models without a
#: short name, e.g. fastflownet (1/64-scale level; NaN below 96 px in our trials).
MIN_SIDE_REASON = (
    "below it the coarsest level of its correlation pyramid is 1 pixel wide and ptlflow's "
    "bilinear_sampler divides by (width - 1) = 0, which gives NaN flow whatever the weights"
)

_CKPT = "--ckpt PATH, or one file {name}.ckpt / {name}-*.ckpt (.pth .pt .safetensors) in $FLOWSTORE_CKPT_DIR"
_LEARNED_DEVICES = ["cpu", "cuda (fp16 too)"]


def _learned_facts(name: str) -> dict:
    model = LEARNED_MODELS[name]
    b1, b8 = model["cpu_pairs_per_s"]
    facts = {
        "needs": f"the ptlflow extra; {model['needs']}; a checkpoint ({_CKPT.format(name=name)})",
        "checkpoint": f"{name}-things-*.ckpt", "published_checkpoint": model["things_ckpt"],
        "devices": list(_LEARNED_DEVICES),
        "paper": model["paper"], "licence": model["licence"],
        "cpu": f"{b1} pairs/s (batch 1), {b8} pairs/s (batch 8)",
        "min_side": model["min_side"],
        "recommended": name == RECOMMENDED_LEARNED,
    }
    if name in PTLFLOW_PUBLISHED:
        ms, epe = PTLFLOW_PUBLISHED[name]
        facts.update(speed=f"{ms} ms/pair on a GPU", accuracy=f"Sintel clean EPE {epe}",
                     source=f"{PTLFLOW_TABLE}; CPU: {OURS_LEARNED}")
    else:
        facts.update(speed="not in ptlflow's published table", accuracy="not in ptlflow's published table",
                     source=f"CPU: {OURS_LEARNED}")
    return facts


#: (method, engine) -> facts; "ptlflow:*" covers ptlflow:NAME
ENGINES = {
    ("farneback", "opencv"): {
        "needs": "core install (OpenCV)", "devices": ["cpu"],
        "speed": "27.5 pairs/s (one thread)", "accuracy": "mean EPE 6.14 px", "source": OURS},
    ("farneback", "torch"): {
        "needs": "core install (torch)", "devices": ["cpu", "cuda", "mps"],
        "speed": "6.6 pairs/s on the CPU (batch 8); GPU not measured yet", "accuracy": "mean EPE 6.14 px (= OpenCV)",
        "source": OURS},
    ("tvl1", "opencv"): {
        "needs": "cv2.optflow (opencv-contrib-python-headless, in the core install)", "devices": ["cpu"],
        "speed": "0.27 pairs/s (one thread)", "accuracy": "mean EPE 4.99 px", "source": OURS},
    ("tvl1", "torch"): {
        "needs": "core install (torch)", "devices": ["cpu", "cuda", "mps"],
        "speed": "0.46 pairs/s on the CPU (batch 1); on a GPU the fused path is estimated at ~120 pairs/s (batch 1) to 600-1200 (batch >= 32) from its ops and memory traffic, not measured yet",
        "accuracy": "mean EPE 4.99 px (= OpenCV)", "source": OURS},
    **{(name, "ptlflow"): _learned_facts(name) for name in LEARNED_MODELS},
    ("ptlflow:*", "ptlflow"): {
        "needs": "the ptlflow extra (some models need compiled extensions ptlflow does not ship); a checkpoint ("
                 + _CKPT.format(name="NAME") + ")",
        "checkpoint": "NAME-things-*.ckpt", "devices": list(_LEARNED_DEVICES),
        "published": {name: {"ms_per_pair": ms, "sintel_clean_epe": epe}
                      for name, (ms, epe) in PTLFLOW_PUBLISHED.items()},
        "source": PTLFLOW_TABLE},
}


def engine_facts(method: str, engine: str) -> dict:
    """The facts of one engine (``{}`` for one registered without them, e.g. by a plugin)."""
    key = "ptlflow:*" if method.startswith("ptlflow:") else method
    return dict(ENGINES.get((key, engine), {}))


def min_frame_side(model_name: str) -> int | None:
    """The smallest frame side ``model_name`` gives finite flow for, where known (else None)."""
    return (LEARNED_MODELS.get(model_name) or {}).get("min_side")


#: fp16 against fp32 of a learned model: mean |difference| <= share x mean |flow| + 0.05 px. 5%,
#: but 10% for gmflow, whose flow is a softmax over its global correlation of (random) features:
#: float16's 1e-3 relative rounding of large logits moves weight between matches far apart (8%
#: measured at 64x48 under CPU float16 autocast). Used by the tests and the GPU check alike.
FP16_RELATIVE = {"gmflow": 0.10}
FP16_ABSOLUTE_PX = 0.05


def fp16_tolerance(model_name: str, mean_abs_flow: float) -> float:
    """The largest mean |fp16 - fp32| in pixels accepted for ``model_name`` (see :data:`FP16_RELATIVE`)."""
    return FP16_RELATIVE.get(model_name, 0.05) * mean_abs_flow + FP16_ABSOLUTE_PX


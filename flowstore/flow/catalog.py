"""What each flow method and engine needs, where it runs and how fast and accurate it is, with
the source of every number; read by ``flowstore methods``. Plain data: no torch, no numpy."""
from __future__ import annotations

#: ptlflow's published benchmark, as quoted in issue 15: RTX 3090, 500x1000, batch 1, fp16;
#: EPE of its "things" checkpoints on the Sintel training set (clean)
PTLFLOW_TABLE = "ptlflow's published benchmark (RTX 3090, 500x1000, batch 1, fp16; Sintel clean EPE of the things checkpoint)"
OURS = "docs/benchmarks.md (project machine, 2 CPU cores, 340x256; EPE: mean over ../shared/data/flow_gt)"

#: ptlflow model -> (ms per pair, Sintel clean EPE) from :data:`PTLFLOW_TABLE`
PTLFLOW_PUBLISHED = {
    "neuflow2": (12.1, 1.27),
    "rapidflow": (13.8, 1.58),
    "sea_raft_s": (27.8, 1.28),
    "gmflow": (28.2, 1.50),
    "raft": (85.0, 1.46),
}

_CKPT = "--ckpt PATH, or one file {name}.ckpt / {name}-*.ckpt (.pth .pt .safetensors) in $FLOWSTORE_CKPT_DIR"

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
        "speed": "0.46 pairs/s on the CPU (batch 1); 15-30 pairs/s per GPU estimated, not measured",
        "accuracy": "mean EPE 4.99 px (= OpenCV)", "source": OURS},
    ("gmflow", "ptlflow"): {
        "needs": "the ptlflow extra; a checkpoint (" + _CKPT.format(name="gmflow") + ")",
        "checkpoint": "gmflow-things-*.ckpt", "devices": ["cpu", "cuda (fp16 too)", "mps"],
        "speed": "28.2 ms/pair", "accuracy": "Sintel clean EPE 1.50", "source": PTLFLOW_TABLE},
    ("ptlflow:*", "ptlflow"): {
        "needs": "the ptlflow extra; a checkpoint (" + _CKPT.format(name="NAME") + ")",
        "checkpoint": "NAME-things-*.ckpt", "devices": ["cpu", "cuda (fp16 too)", "mps"],
        "published": {name: {"ms_per_pair": ms, "sintel_clean_epe": epe}
                      for name, (ms, epe) in PTLFLOW_PUBLISHED.items()},
        "source": PTLFLOW_TABLE},
}


def engine_facts(method: str, engine: str) -> dict:
    """The facts of one engine (``{}`` for one registered without them, e.g. by a plugin)."""
    key = "ptlflow:*" if method.startswith("ptlflow:") else method
    return dict(ENGINES.get((key, engine), {}))

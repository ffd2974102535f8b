"""Run by tests/test_damaged_store.py in a subprocess (a crash then shows as a negative return
code, not a dead pytest): each entry point of flowstore on each store named on the command line,
one JSON line per (store, entry point): ``{"store", "entry", "code", "out"}``, where ``code`` is
the exit code the CLI gives (0 for a library call that raised nothing) and ``out`` the last line
it printed or the FlowstoreError's message. Any other exception propagates: a traceback."""
import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout

import flowstore
from flowstore.cli.main import cli
from flowstore.errors import FlowstoreError


def run_cli(*args) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli.main(list(args), prog_name="flowstore", standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        except FlowstoreError as exc:  # standalone_mode=False lets click pass some through
            code, err = exc.exit_code, io.StringIO(f"error: {exc.message}")
    text = (err.getvalue().strip() or out.getvalue().strip()).splitlines()
    bad = [line for line in out.getvalue().splitlines() if line.startswith("BAD ")]
    return code, "\n".join(bad + text[-1:])


def read_all(store) -> tuple[int, str]:
    try:
        with flowstore.open_store(store, check=True) as reader:
            for vid in reader.videos:
                for i in range(reader.num_frames(vid)):
                    reader.frame(vid, i)
                for i in range(reader.num_flows(vid)):
                    reader.flow(vid, i)
        return 0, "read"
    except FlowstoreError as exc:
        return exc.exit_code, exc.message


def load_all(store) -> tuple[int, str]:
    from flowstore.data import StoreClipDataset, make_loader

    try:
        ds = StoreClipDataset(store, modality="both", sampling="tsn", flow_values="uint8", rgb_values="uint8",
                              clips_per_video=3)
        for _ in make_loader(ds, batch_size=2, num_workers=2, persistent_workers=False):
            pass
        return 0, "loaded"
    except FlowstoreError as exc:
        return exc.exit_code, exc.message


ENTRIES = {
    "info": lambda store, video: run_cli("info", store),
    "verify": lambda store, video: run_cli("verify", "--no-progress", store),
    "read": lambda store, video: read_all(store),
    "loader": lambda store, video: load_all(store),
    "extract": lambda store, video: run_cli("extract", video, "--out", store, "--no-progress", "--method", "farneback",
                                            "--size", "64x48", "--workers", "1", "--format", sys.argv[2]),
}

if __name__ == "__main__":
    video, _, entries, *stores = sys.argv[1:]
    for store in stores:
        for entry in entries.split(","):
            code, out = ENTRIES[entry](store, video)
            print(json.dumps({"store": store, "entry": entry, "code": code, "out": out}), flush=True)

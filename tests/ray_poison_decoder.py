"""A decoder for the Ray fault tests, imported by the Ray workers too: OpenCV's, except that it
kills its own process with SIGSEGV on any file named ``part_0.*`` (a poison video)."""
import os
import signal
from pathlib import Path

from flowstore.decode import DECODERS, register_decoder

NAME = "poison-test"
POISON_STEM = "part_0"

if NAME not in DECODERS:
    @register_decoder(NAME)
    def _poison(path: str):
        if Path(path).stem == POISON_STEM:
            os.kill(os.getpid(), signal.SIGSEGV)
        yield from DECODERS["opencv"](path)

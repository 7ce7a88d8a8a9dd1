"""``ctxasr batch`` with a fake model in its workers, to test worker deaths.

Spawned workers run this file again as their main module, so the patch reaches them.
A recording named ``poison*`` kills its worker outright; ``FAKE_LOAD_ERROR=1`` makes
the model fail to load.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ctxasr.batch import workers
from ctxasr.errors import ModelError
from ctxasr.results import Transcript


class FakeTranscriber:
    def transcribe(self, audio, context=(), document=None):
        name = Path(audio).name
        if name.startswith("poison"):
            os._exit(3)  # as a segfault or the OOM killer would: no cleanup, no reply
        time.sleep(0.3)
        return Transcript(text=f"heard {name}", segments=(), duration=1.0, model="fake",
                          language="en")  # fmt: skip


def load(self):
    if os.environ.get("FAKE_LOAD_ERROR"):
        raise ModelError("fake-model", "is broken")
    return FakeTranscriber()


workers.WorkerSetup.load = load

if __name__ == "__main__":
    from ctxasr.cli.batch import main

    main()

"""What every ``ctxasr train`` loop shares: reading its recipe, and resuming a run.

A recipe is a TOML file; a run keeps accelerate's whole training state under
``OUT/state`` with the step it reached, so rerunning the same command continues it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomllib

from ctxasr.errors import CtxasrError


def read_toml(path: Path) -> dict[str, Any]:
    """A recipe's tables; a file that cannot be read or parsed is one ``CtxasrError``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CtxasrError(str(path), f"cannot read the config: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CtxasrError(str(path), f"not a valid TOML file: {err}") from None


class RunState:
    """accelerate's state of a run under ``out/state``, and the step it reached."""

    def __init__(self, accelerator: Any, out: Path) -> None:  # accelerate.Accelerator
        self.accelerator = accelerator
        self.folder = out / "state"
        self.marker = self.folder / "step.json"

    def resume(self) -> int:
        """Load the saved state, if any; the step to continue from (0: a fresh run)."""
        if not self.marker.is_file():
            return 0
        self.accelerator.load_state(str(self.folder))
        return json.loads(self.marker.read_text())["step"]

    def save(self, step: int) -> None:
        """Save the whole state as reached after ``step`` steps."""
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(self.folder))
        if self.accelerator.is_main_process:
            self.marker.write_text(json.dumps({"step": step}))

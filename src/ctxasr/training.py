"""What every ``ctxasr train`` loop shares: reading its recipe, and resuming a run.

A recipe is a TOML file (``.toml``) or a YAML one (``.yaml``/``.yml``) of the same
tables; a run keeps accelerate's whole training state under
``OUT/state`` with the step it reached, so rerunning the same command continues it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from ctxasr.errors import CtxasrError


def read_toml(path: Path) -> dict[str, Any]:
    """A recipe's tables; a file that cannot be read or parsed is one ``CtxasrError``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CtxasrError(str(path), f"cannot read the config: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CtxasrError(str(path), f"not a valid TOML file: {err}") from None


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe's tables from TOML or, by the file's suffix, YAML; one ``CtxasrError``
    for a file that cannot be read or parsed or that is not a mapping of tables."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return read_toml(path)
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CtxasrError(str(path), f"cannot read the config: {err.strerror or err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problem = " ".join(str(err).split())
        raise CtxasrError(str(path), f"not a valid YAML file: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CtxasrError(str(path), "must be a mapping of tables, e.g. 'train:' and 'model:'")
    return raw


def warmup_cosine(step: int, warmup: int, steps: int) -> float:
    """The learning rate's factor at ``step`` (from 0) of ``steps``: a linear warm-up over
    ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    done = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


class RunState:
    """accelerate's state of a run under ``out/state``, and the step it reached."""

    def __init__(self, accelerator: Any, out: Path,
                 keep: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        """``keep``: which of the model's state-dict entries a saved state holds (None:
        all). A frozen LLM needs no copy in every save: the speech LLM keeps only what
        it trains, 11 MB instead of 540 MB, and loads the rest from its source."""
        self.accelerator = accelerator
        self.folder = out / "state"
        self.marker = self.folder / "step.json"
        self.keep = keep
        if keep is not None:
            accelerator.register_save_state_pre_hook(self._trim)

    def _trim(self, models: list, weights: list[dict], output_dir: str) -> None:
        for state in weights:
            for name in [k for k in state if not self.keep(k)]:
                del state[name]

    def resume(self) -> int:
        """Load the saved state, if any; the step to continue from (0: a fresh run)."""
        if not self.marker.is_file():
            return 0
        if self.keep is None:
            self.accelerator.load_state(str(self.folder))
        else:  # the trimmed entries come from the model as built
            self.accelerator.load_state(str(self.folder), strict=False)
        return json.loads(self.marker.read_text())["step"]

    def save(self, step: int) -> None:
        """Save the whole state as reached after ``step`` steps."""
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(self.folder))
        if self.accelerator.is_main_process:
            self.marker.write_text(json.dumps({"step": step}))


# -- checking a recipe's tables against frozen dataclasses ------------------------------


def build_table(source: Path, table: str, cls: type, raw: object, skip: set[str] = set()) -> Any:  # noqa: B006
    """``cls(**raw)`` with each key checked against the field's default type."""
    if not isinstance(raw, dict):
        raise CtxasrError(str(source), f"[{table}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_known(source, f"[{table}]", raw, set(fields))
    for key, value in raw.items():
        if key in skip:
            continue
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else ""
        if not _fits(default, value):
            kind = type(default).__name__.replace("tuple", "list of strings")
            raise CtxasrError(str(source), f"[{table}] {key}: must be a {kind}, got {value!r}")
    try:
        return cls(**tuples(cls, raw))
    except (TypeError, ValueError) as err:
        raise CtxasrError(str(source), f"[{table}] {err}") from None


def _fits(default: object, value: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, type(default))


def tuples(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """TOML and JSON give lists where the dataclass keeps tuples."""
    tuples = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple)}
    return {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in raw.items()}


def check_known(source: Path, where: str, raw: dict, known: set[str]) -> None:
    unknown = set(raw) - known
    if unknown:
        raise CtxasrError(str(source), f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")


def at_least(obj: object, name: str, low: int) -> None:
    value = getattr(obj, name)
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def one_of(obj: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

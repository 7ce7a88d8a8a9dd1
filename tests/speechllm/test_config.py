"""Speech LLM recipes: the tiny recipe reads, bad ones fail in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxasr.cli import app
from ctxasr.errors import CtxasrError
from ctxasr.speechllm.config import ModelConfig, PoolingConfig, read_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_tiny_recipe_reads() -> None:
    cfg = read_config(ROOT / "configs" / "speechllm" / "tiny.toml")
    assert cfg.model.llm == "tiny-random" and cfg.model.encoders == ("random:48:25",)
    assert cfg.model.pooling == PoolingConfig(kind="sap", window=2, heads=4)
    assert Path(cfg.out).is_absolute() and cfg.out.endswith("run")
    assert ModelConfig.from_json(cfg.model.to_json()) == cfg.model


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[train\n", "not a valid TOML"),
        ('[train]\nout = "x"\n', r"\[train\] needs 'train'"),
        ('[train]\ntrain = "a"\nout = "x"\nstepz = 3\n', r"unknown key\(s\) in \[train\]: stepz"),
        ('[train]\ntrain = "a"\nout = "x"\nsteps = "many"\n', r"\[train\] steps: must be a int"),
        ('[train]\ntrain = "a"\nout = "x"\nno_context = 2.0\n', r"\[train\] no_context must be"),
        ('[train]\ntrain = "a"\nout = "x"\ndev_ctc_weight = 1.5\n',
         r"\[train\] dev_ctc_weight must be in \[0, 1\]"),
        ('[train]\ntrain = "a"\nout = "x"\n[model.pooling]\nkind = "max"\n',
         r"\[model.pooling\] kind must be one of sap, mean, none, got 'max'"),
        ('[train]\ntrain = "a"\nout = "x"\n[model.pooling]\nwindow = 0\n',
         r"\[model.pooling\] window must be at least 1"),
        ('[train]\ntrain = "a"\nout = "x"\n[model.projector]\nkind = "conv"\n',
         r"\[model.projector\] kind must be one of linear, mlp"),
        ('[train]\ntrain = "a"\nout = "x"\n[model]\nprompt = "no slot"\n',
         r"\[model\] prompt must hold '\{keywords\}'"),
        ('[train]\ntrain = "a"\nout = "x"\n[model]\nencoders = []\n', r"\[model\] encoders must"),
        ('[train]\ntrain = "a"\nout = "x"\n[model.lora]\nrank = 4\n',
         r"unknown key\(s\) in \[model.lora\]: rank"),
        ('[train]\ntrain = "a"\nout = "x"\n[optim]\n', r"unknown key\(s\) in the file: optim"),
    ],
)  # fmt: skip
def test_bad_configs_are_one_line(tmp_path: Path, body: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    with pytest.raises(CtxasrError, match=message) as err:
        read_config(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


def test_the_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\ntrain = "a"\nout = "x"\n[model.pooling]\nheads = 0\n')
    result = CliRunner().invoke(app, ["train", "speechllm", str(bad), "-q"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"ctxasr: error: {bad}: [model.pooling] heads must be at least 1, got 0"
    ]
    missing = CliRunner().invoke(app, ["train", "speechllm", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1 and "cannot read the config" in missing.output

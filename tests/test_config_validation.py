"""Config validation: every bad value in config.toml is refused when it loads, one line naming it."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.config import AplConfig
from apl_tui.errors import ConfigError

# (TOML line under its section, the message after "config.toml: ")
BAD = [
    ("train", "learning_rate = inf", "train.learning_rate must be a finite positive number, got inf"),
    ("train", "beta = inf", "train.beta must be a finite positive number, got inf"),
    ("train", "beta = nan", "train.beta must be a finite positive number, got nan"),
    ("train", "beta = -0.1", "train.beta must be a finite positive number, got -0.1"),
    ("loop", "round_size = 2.5", "loop.round_size must be a positive integer, got 2.5"),
    ("loop", "round_size = true", "loop.round_size must be a positive integer, got True"),
    ("train", 'seed = "x"', "train.seed must be a non-negative integer, got 'x'"),
    ("model", "spec = 5", "model.spec must be a non-empty string, got 5"),
    ("model", 'spec = "  "', "model.spec must be a non-empty string, got '  '"),
    ("model", 'device = "tpu"', "model.device must be one of auto, cpu, cuda, got 'tpu'"),
    ("model", 'use_chat_template = "yes"', "model.use_chat_template must be true or false, got 'yes'"),
    ("model", 'allow_download = 1', "model.allow_download must be true or false, got 1"),
    ("lora", 'target_modules = "q_proj"', 'lora.target_modules must be a list of names, like ["q_proj", "v_proj"], '
     "got 'q_proj'"),
    ("lora", "target_modules = [1, 2]", "lora.target_modules must be a list of names"),
    ("lora", "alpha = -16", "lora.alpha must be a positive integer, got -16"),
    ("lora", "dropout = 1.0", "lora.dropout must be a finite number in [0, 1), got 1.0"),
    ("generation", "max_new_tokens = 0", "generation.max_new_tokens must be a positive integer, got 0"),
    ("generation", "top_p = 0", "generation.top_p must be a finite number in (0, 1], got 0"),
    ("generation", "temperature = -inf", "generation.temperature must be a finite positive number, got -inf"),
    ("generation", "min_new_tokens = 30", "generation.min_new_tokens must be at most max_new_tokens (24), got 30"),
    ("acquisition", "chunk_size = 0", "acquisition.chunk_size must be a positive integer, got 0"),
    ("acquisition", "chunk_size = -5", "acquisition.chunk_size must be a positive integer, got -5"),
    ("acquisition", "control_share = 1.5", "acquisition.control_share must be a finite number in [0, 1], got 1.5"),
    ("acquisition", "low_water = 64", "acquisition.low_water must be at most pool_size (32), got 64"),
    ("train", "max_grad_norm = -1.0", "train.max_grad_norm must be a finite positive number, got -1.0"),
    ("train", "weight_decay = -0.01", "train.weight_decay must be a finite non-negative number, got -0.01"),
    ("train", "replay = -3", "train.replay must be a non-negative integer, got -3"),
    ("train", 'loss = "hinge"', "train.loss must be one of sigmoid, ipo, ipo-sum, robust, got 'hinge'"),
    ("train", "epochs = 1e9", "train.epochs must be a positive integer, got 1000000000.0"),
    ("train", "lr = 0.1", "unknown setting train.lr"),
    ("trian", "beta = 0.1", "unknown section"),
]


@pytest.mark.parametrize(("section", "line", "message"), BAD, ids=[b[1] for b in BAD])
def test_bad_value_is_refused_with_its_name(tmp_path, section, line, message):
    path = tmp_path / "config.toml"
    path.write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        AplConfig.load(path)
    assert err.value.message.startswith(f"{path}: {message}")
    assert "\n" not in err.value.message and err.value.hint


def test_good_values_pass_and_ints_are_accepted_for_floats(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[train]\nbeta = 1\nlearning_rate = 1e-4\n[lora]\ntarget_modules = ["q_proj"]\n'
                    "[model]\nallow_download = true\n")
    cfg = AplConfig.load(path)
    assert cfg.train.beta == 1 and cfg.lora.target_modules == ("q_proj",) and cfg.model.allow_download
    assert math.isclose(cfg.train.learning_rate, 1e-4)


def test_defaults_round_trip_through_dump(tmp_path):
    AplConfig().dump(tmp_path / "config.toml")
    assert AplConfig.load(tmp_path / "config.toml") == AplConfig()


def test_command_line_override_is_validated_too():
    with pytest.raises(ConfigError, match="loop.round_size must be a positive integer, got 0"):
        AplConfig().replace("loop", round_size=0)


@pytest.mark.parametrize("line", ["learning_rate = inf", "beta = inf", "epochs = 0"])
def test_cli_prints_one_line_and_no_traceback(tmp_path, line):
    store = tmp_path / "s"
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--store", str(store)]).exit_code == 0
    (store / "config.toml").write_text(f"[train]\n{line}\n")
    r = runner.invoke(app, ["next", "--store", str(store)])
    assert r.exit_code == 1
    assert f"train.{line.split()[0]} must be" in r.stderr and "Traceback" not in r.stderr

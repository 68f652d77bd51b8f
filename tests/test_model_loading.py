"""Loading a model: damaged files and an unreachable hub give one line, quickly, with the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bertlottery.errors import UserError
from bertlottery.models import load_model

from tiny import tiny_model

REPO = Path(__file__).resolve().parents[1]


def test_a_truncated_model_safetensors_names_the_file_and_the_fix(tmp_path):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"Model weights {weights} are damaged \(.*\); re-run the stage that wrote"):
        load_model(str(folder), 2)
    (folder / "config.json").write_text('{"model_type": "bert", ')  # cut short too
    with pytest.raises(UserError, match=rf"Could not load the model in {folder} .*re-run the stage that wrote it"):
        load_model(str(folder), 2)


def test_an_unreachable_hub_gives_one_line_without_retries(tmp_path, tiny_model_dir):
    """With the network down, transformers retries a hub download five times over ~23 s, printing two
    lines per attempt; an unknown name must instead fail at once, and a local folder never asks."""
    script = textwrap.dedent(f"""
        from bertlottery.errors import UserError
        from bertlottery.models import load_model, load_tokenizer
        load_model({str(tiny_model_dir)!r}, 2)
        load_tokenizer({str(tiny_model_dir)!r})
        print("local ok")
        for name in ("someone/no-such-model", "no-such-model"):
            try:
                load_model(name, 2)
            except UserError as error:
                print("error:", error)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # port 9 (discard) on loopback refuses at once: a hub that cannot be reached, on any machine
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO / "src"))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "Retrying" not in output and "thrown while requesting" not in output, output
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert done.stdout.splitlines()[0] == "local ok"
    assert len(errors) == 2 and all("the Hugging Face hub cannot be reached" in e for e in errors), done.stdout
    assert "local folder or the offline alias minilm-l6" in errors[0]
    print(f"two refusals and a local load in {seconds:.1f} s")  # with the retries: over 46 s of sleep alone



def test_a_half_precision_checkpoint_is_loaded_with_fp32_weights(tmp_path):
    """A checkpoint stored in fp16 or bf16 (as many on the hub are) is fine-tuned from fp32 master weights,
    its values unchanged: transformers 5 would otherwise keep the stored dtype, and AdamW on half-precision
    weights drops small updates. Half-precision compute comes from autocast, never from the weights."""
    for dtype in (torch.float16, torch.bfloat16):
        stored = tiny_model(dtype=dtype)
        stored.save_pretrained(tmp_path / str(dtype))
        loaded = load_model(str(tmp_path / str(dtype)), 2)
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        name = "bert.encoder.layer.0.attention.self.query.weight"
        assert torch.equal(loaded.state_dict()[name], stored.state_dict()[name].float())

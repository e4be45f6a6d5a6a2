"""The fine-tuning entry point (`python -m s2d_utils.train`, `accelerate launch -m s2d_utils.train`):
the same student as the in-notebook loop, resumable, never an empty adapter."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s2d_utils import distill, paths, train
from s2d_utils.tasks import last_letter


def _pairs(n=4):
    return [{"id": e.id, "prompt": e.input, "completion": e.gold} for e in last_letter.load("train", n=n, seed=3)]


SETTINGS = distill.LoraSettings(r=4, alpha=8, steps=3, batch_size=2, learning_rate=1e-3)


def test_the_entry_point_trains_the_same_student_as_the_notebook_loop(tiny_lm, tiny_model_dir, tmp_path):
    """Same token ids, answer-only mask, batches, LoRA init and optimizer: the same losses step by
    step (the entry point's loss is the model's own forward with labels, `answer_loss` ours), and
    the same content-addressed folder name."""
    pairs = _pairs()
    ours = distill.finetune(tiny_lm, pairs, SETTINGS, out_dir=tmp_path / "notebook", progress=False)
    theirs = train.train(str(tiny_model_dir), pairs, SETTINGS, out_dir=tmp_path / "entry", progress=False)
    assert theirs.adapter_dir.name == ours.adapter_dir.name
    assert theirs.steps == ours.steps == 3 and theirs.tokens == ours.tokens
    assert theirs.losses == pytest.approx(ours.losses, abs=2e-4)
    log = json.loads((theirs.adapter_dir / "train_log.json").read_text())
    assert log["base_fingerprint"] == tiny_lm.fingerprint and log["processes"] == 1
    # the notebook finds the entry point's adapter and does not train again
    again = distill.finetune(tiny_lm, pairs, SETTINGS, out_dir=tmp_path / "entry", progress=False)
    assert again.reused and again.adapter_dir == theirs.adapter_dir


def test_a_run_stopped_after_a_checkpoint_resumes_to_the_same_student(tiny_model_dir, tmp_path):
    pairs = _pairs()
    whole = train.train(str(tiny_model_dir), pairs, SETTINGS, out_dir=tmp_path / "a", progress=False)
    assert train.train(str(tiny_model_dir), pairs, SETTINGS, out_dir=tmp_path / "b", save_every=1, stop_after=2,
                       progress=False) is None
    partial = next((tmp_path / "b").glob("*.partial"))
    assert json.loads((partial / train.STATE / train.PROGRESS).read_text())["step"] == 2
    import torch

    saved = torch.load(partial / train.STATE / train.TRAINABLE, weights_only=False)
    assert saved["weights"] and all("lora_" in k for k in saved["weights"]), "a checkpoint holds the frozen base"
    resumed = train.train(str(tiny_model_dir), pairs, SETTINGS, out_dir=tmp_path / "b", save_every=1, progress=False)
    assert resumed.losses[:2] == whole.losses[:2] and resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    assert not partial.exists()


def test_an_empty_or_untrained_adapter_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "a"
    folder.mkdir()
    with pytest.raises(RuntimeError, match="no adapter_model.safetensors"):
        distill.check_adapter(folder)
    save_file({"x.lora_A.weight": torch.ones(2, 4), "x.lora_B.weight": torch.zeros(4, 0)},
              str(folder / "adapter_model.safetensors"))
    with pytest.raises(RuntimeError, match="empty LoRA adapter.*ZeRO-3"):
        distill.check_adapter(folder)
    save_file({"x.lora_A.weight": torch.ones(2, 4), "x.lora_B.weight": torch.zeros(4, 2)},
              str(folder / "adapter_model.safetensors"))
    with pytest.raises(RuntimeError, match="every LoRA B matrix is zero"):
        distill.check_adapter(folder)
    save_file({"x.lora_A.weight": torch.ones(2, 4), "x.lora_B.weight": torch.ones(4, 2)},
              str(folder / "adapter_model.safetensors"))
    distill.check_adapter(folder)


def test_bad_pairs_and_settings_name_the_file_line_and_field(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"id": "1", "prompt": "p", "completion": "c"}\n{"id": "2", "prompt": "p"}\n')
    with pytest.raises(ValueError, match=rf"{f} line 2: field 'completion' is missing"):
        train.read_pairs(f)
    f.write_text('{"id": "1", "prompt": "p", "completion": "c"}\nnot json\n')
    with pytest.raises(ValueError, match=rf"{f} line 2: not valid JSON"):
        train.read_pairs(f)
    with pytest.raises(ValueError, match=r"unknown keys \['rank'\]"):
        train.parse_settings('{"rank": 4}')
    assert train.parse_settings('{"r": 4, "target_modules": ["q_proj"]}').target_modules == ("q_proj",)


def test_the_module_runs_from_the_command_line(tiny_model_dir, tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in _pairs(2)))
    settings = json.dumps({"r": 4, "alpha": 8, "steps": 1, "batch_size": 2})
    proc = subprocess.run([sys.executable, "-m", "s2d_utils.train", "--model", str(tiny_model_dir), "--pairs", str(f),
                           "--settings", settings, "--out-dir", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["steps"] == 1 and Path(record["adapter_dir"]).is_dir()


def test_the_accelerate_configs_parse_and_name_their_strategy():
    import yaml

    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (paths.ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert {k: v["distributed_type"] for k, v in configs.items()} == {"one_gpu": "NO", "fsdp": "FSDP",
                                                                       "zero3": "DEEPSPEED"}
    assert configs["zero3"]["deepspeed_config"]["zero_stage"] == 3
    # weights partitioned as they load; no activation checkpointing that draws other dropout masks
    assert configs["zero3"]["deepspeed_config"]["zero3_init_flag"] is True
    assert configs["fsdp"]["fsdp_config"]["fsdp_activation_checkpointing"] is False
    assert configs["fsdp"]["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is True


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_two_processes_train_the_student_one_process_trains(tiny_lm, tmp_path, monkeypatch):
    """S2D_TRAIN_PROCESSES=2: `finetune` launches the entry point on two processes (torchrun and
    gloo on this CPU; `accelerate launch` where there are GPUs) and returns the adapter they wrote,
    in the folder the in-kernel loop would have used. Data parallel must not change the student:
    with 5 pairs in batches of 4, one step has rows of unequal length split 2 + 2 and another a
    single row (the second process runs a row of weight 0), so a per-process mean, or a repeated
    row, gives other losses and weights. Dropout is off: each process draws its own masks."""
    import torch

    settings = distill.LoraSettings(r=4, alpha=8, steps=3, batch_size=4, learning_rate=1e-2, dropout=0.0)
    pairs = _pairs(5)
    pairs[0] = dict(pairs[0], completion=pairs[0]["completion"] * 6)  # rows with unequal answer tokens
    monkeypatch.setenv("S2D_TRAIN_PROCESSES", "2")
    two = distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "launched", progress=False)
    log = json.loads((two.adapter_dir / "train_log.json").read_text())
    assert log["processes"] == 2 and log["distributed"] == "MULTI_CPU" and two.steps == 3 and not two.reused
    monkeypatch.setenv("S2D_TRAIN_PROCESSES", "1")
    one = distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "local", progress=False)
    assert one.adapter_dir.name == two.adapter_dir.name and one.tokens == two.tokens
    assert one.losses == pytest.approx(two.losses, abs=1e-4)
    a, b = _adapter_weights(one.adapter_dir), _adapter_weights(two.adapter_dir)
    assert a.keys() == b.keys()
    moved = [k for k in a if "lora_B" in k and a[k].abs().max() > 1e-4]
    assert moved, "the students did not train"
    # gloo's all-reduce sums in another order than one process: Adam at LR 1e-2 turns that into
    # up to ~3e-5 on some CPUs; a wrong reduction (a per-process mean, a repeated row) moves a
    # weight by the order of the LR, 1e-2
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), (k, (a[k] - b[k]).abs().max().item())
    monkeypatch.setenv("S2D_TRAIN_PROCESSES", "two")
    with pytest.raises(ValueError, match="S2D_TRAIN_PROCESSES='two'"):
        distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "x", progress=False)


def test_only_process_0_reads_the_weights_under_fsdp_ram_efficient_loading(tiny_model_dir):
    """FSDP with ``fsdp_cpu_ram_efficient_loading``: the other processes build the model on the meta
    device (prepare broadcasts process 0's weights), so 8 processes do not hold 8 copies of a 70B
    model in CPU memory; without it, or on process 0, the weights are read."""
    import types

    import torch
    from accelerate.utils import DistributedType

    from s2d_utils.models import load_model

    base = load_model(str(tiny_model_dir), device="cpu", weights=False)

    def accelerator(kind, rank, efficient=True):
        plugin = types.SimpleNamespace(cpu_ram_efficient_loading=efficient)
        return types.SimpleNamespace(state=types.SimpleNamespace(distributed_type=kind, fsdp_plugin=plugin),
                                     process_index=rank)

    devices = lambda m: {p.device.type for p in m.parameters()}  # noqa: E731
    empty = train.load_weights(base, accelerator(DistributedType.FSDP, 1), torch.float32)
    full = train.load_weights(base, accelerator(DistributedType.FSDP, 0), torch.float32)
    assert devices(empty) == {"meta"} and devices(full) == {"cpu"}
    # buffers are not broadcast: accelerate copies each process's own (the rotary frequencies) to its device
    buffers = dict(full.named_buffers())
    assert buffers and {n for n, _ in empty.named_buffers()} == set(buffers)
    assert all(b.device.type == "cpu" and torch.equal(b, buffers[n]) for n, b in empty.named_buffers())
    assert devices(train.load_weights(base, accelerator(DistributedType.FSDP, 1, False), torch.float32)) == {"cpu"}
    assert devices(train.load_weights(base, accelerator(DistributedType.MULTI_CPU, 1), torch.float32)) == {"cpu"}


def test_an_adapter_already_trained_is_returned_without_reading_the_weights(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    first = train.train(str(tiny_model_dir), _pairs(), SETTINGS, out_dir=tmp_path, progress=False)

    def refuse(*a, **k):
        raise AssertionError("the weights were read for an adapter that exists")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    again = train.train(str(tiny_model_dir), _pairs(), SETTINGS, out_dir=tmp_path, progress=False)
    assert again.adapter_dir == first.adapter_dir and again.reused


def test_two_processes_stopped_after_a_checkpoint_resume_to_the_student_of_one_go(tiny_model_dir, tmp_path):
    """The checkpoint of a data-parallel run (LoRA weights and optimizer gathered whole, scheduler,
    each process's RNG; no frozen weights) resumes on two processes to exactly the student two
    processes train in one go."""
    import os

    settings = {"r": 4, "alpha": 8, "steps": 3, "batch_size": 4, "learning_rate": 1e-2, "dropout": 0.1}
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in _pairs(5)))
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")

    def run(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "s2d_utils.train", "--model", str(tiny_model_dir), "--pairs", str(f), "--settings", json.dumps(settings),
               "--out-dir", str(tmp_path / out), "--no-progress", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]

    run("whole")
    run("resumed", "--save-every", "1", "--stop-after", "2")
    (partial,) = (tmp_path / "resumed").glob("*.partial")
    assert sorted(p.name for p in (partial / train.STATE).iterdir()) == [train.PROGRESS, "rng_0.pt", "rng_1.pt",
                                                                         train.TRAINABLE]
    run("resumed", "--save-every", "1")
    (whole,), (resumed,) = ([distill.read_trained(d) for d in (tmp_path / x).iterdir()] for x in ("whole", "resumed"))
    assert not partial.exists() and resumed.losses == whole.losses and resumed.adapter_dir.name == whole.adapter_dir.name
    a, b = _adapter_weights(whole.adapter_dir), _adapter_weights(resumed.adapter_dir)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_a_run_killed_while_replacing_its_checkpoint_resumes_from_a_complete_one(tmp_path):
    """A checkpoint is written as state.tmp (progress last), then state -> state.old, state.tmp ->
    state, state.old removed: killed at any point, the newest complete one is found, and named
    state again (the next save would otherwise delete it before writing its own)."""
    import types

    partial = tmp_path / "distill-x.partial"

    def checkpoint(name, step=None, files=("rng_0.pt",)):
        folder = partial / name
        folder.mkdir(parents=True)
        for f in files:
            (folder / f).write_bytes(b"")
        if step is not None:
            (folder / train.PROGRESS).write_text(json.dumps({"step": step}))

    def found():
        got = train.last_checkpoint(partial)
        return got and (got.name, json.loads((got / train.PROGRESS).read_text())["step"],
                        sorted(p.name for p in partial.iterdir()))

    assert train.last_checkpoint(partial) is None
    checkpoint("state.tmp")  # killed while writing the first one
    assert train.last_checkpoint(partial) is None
    (partial / "state.tmp" / train.PROGRESS).write_text(json.dumps({"step": 1}))  # ... after its progress
    assert found() == ("state", 1, ["state"])
    checkpoint("state.old", step=2)  # killed between the renames: state.old is the newest complete one
    import shutil

    shutil.rmtree(partial / "state")
    assert found() == ("state", 2, ["state"])
    checkpoint("state.tmp", step=3)  # killed before the renames: the new one is complete, and newer
    assert found() == ("state", 3, ["state"])
    # a checkpoint of one process cannot resume on two: said, with what to do
    two = types.SimpleNamespace(num_processes=2)
    with pytest.raises(RuntimeError, match="a checkpoint of 1 processes; resume it with as many"):
        train.load_checkpoint(two, None, None, None, partial / train.STATE)


def test_deepspeed_checkpoints_leave_the_frozen_base_out_and_load_without_it(tmp_path):
    """Under ZeRO-3 accelerate's save_state writes the checkpoint: without the frozen weights
    (exclude_frozen_parameters), so loading must not be strict about them. (Accelerator faked:
    DeepSpeed does not install here.)"""
    import types

    import torch
    from accelerate.utils import DistributedType

    calls = []
    acc = types.SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=1, process_index=0,
                                is_main_process=True, wait_for_everyone=lambda: None,
                                save_state=lambda d, **kw: calls.append(("save", kw)),
                                load_state=lambda d, **kw: calls.append(("load", kw)))
    folder = tmp_path / "distill-x.partial" / train.STATE
    train.save_checkpoint(acc, None, None, None, folder, {"step": 2})
    assert sorted(p.name for p in folder.iterdir()) == [train.PROGRESS, "rng_0.pt"]
    torch.manual_seed(5)
    assert train.load_checkpoint(acc, None, None, None, folder) == {"step": 2}
    assert calls == [("save", {"exclude_frozen_parameters": True}), ("load", {"load_module_strict": False})]


def test_the_accelerate_config_is_found_from_the_notebooks_folder_too(tmp_path, monkeypatch):
    """Notebooks run in notebooks/ (papermill --cwd): a config named relative to the repository, as
    the README writes it, is found there; a missing one is named with the shipped ones."""
    monkeypatch.chdir(paths.ROOT / "notebooks")
    assert distill.accelerate_config("configs/accelerate/fsdp.yaml") == str(paths.ROOT / "configs/accelerate/fsdp.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: 'NO'\n")
    assert distill.accelerate_config(str(own)) == str(own) and distill.accelerate_config(None) is None
    with pytest.raises(FileNotFoundError, match=r"S2D_ACCELERATE_CONFIG='nope.yaml'.*fsdp.yaml"):
        distill.accelerate_config("nope.yaml")

"""Distillation: (input -> final answer) pairs, LoRA fine-tuning, and loading the result.

Paper Sec. 3: the student is the *same* model, fine-tuned on the System 2 program's final
answers only (no intermediate tokens), with the loss on the answer tokens only.

Training is a short, explicit loop over peft LoRA rather than TRL's SFTTrainer (the loop, its
batches and its loss are `lora`'s): the prompt is rendered by the same `generation.render` the
evaluation uses (so train and test prompts are byte-identical), the loss mask is exact, and on a
2-core CPU the loop has no trainer overhead. It runs on CUDA unchanged. The adapter is saved in
the standard peft format.

Adapters are content-addressed: the folder name hashes the base model's fingerprint, the
training pairs and the hyperparameters, so a rerun loads the finished adapter instead of
retraining, and an interrupted run (no ``train_log.json`` yet) trains again from scratch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import paths
from .filters import Kept
from .lora import (LoraSettings, TrainResult, adapter_dir, needs_checkpointing, read_trained, tokenize, train_loop,
                   with_lora)
from .lora import adapter_key, answer_loss, check_adapter, training_steps  # noqa: F401 (`distill.` names too)
from .memory import free_memory, own_mappings
from .models import LoadedModel, adapter_hash, load_model

ANSWER_TEMPLATE = "The answer is {answer}."


def answer_completion(answer: str) -> str:
    """The final answer only, in a fixed sentence the tasks' strict parsers read."""
    return ANSWER_TEMPLATE.format(answer=answer)


def answer_target(kept: Kept) -> str:
    """Distillation target for short-answer tasks (RaR, CoT): "The answer is X." (Sec. 4.1, 4.4)."""
    return answer_completion(kept.answer)


def final_response_target(kept: Kept) -> str:
    """Distillation target for S2A (Sec. 4.2): the chosen sample's whole final response."""
    return kept.trace.final.strip()


def final_call_target(kept: Kept) -> str:
    """Distillation target for RaR (Sec. 4.1) as the paper's distilled #Tokens imply: the response of
    the program's last call (2-step RaR: the respond call) in the sample the filter kept, whose
    parsed answer is the vote's (`filters.self_consistency` keeps the first such sample)."""
    return kept.trace.final.strip()


def verdict_target(kept: Kept) -> str:
    """Distillation target for an LLM judge (Sec. 4.3): the verdict token string, e.g. "[[A]]"."""
    return f"[[{kept.answer}]]"


TARGET_NOTES = {
    answer_target: f"the vote's answer in the fixed sentence {ANSWER_TEMPLATE.format(answer='X')!r}",
    final_call_target: "the final (respond) call's whole response in a kept sample whose parsed answer is the vote's",
    final_response_target: "the chosen sample's whole final response",
    verdict_target: "the verdict alone ('[[A]]', '[[B]]' or '[[C]]')",
}


def target_note(target: Callable[[Kept], str]) -> str:
    """What a target function makes the students learn, for the table notes."""
    return TARGET_NOTES.get(target, (target.__doc__ or target.__name__).strip().split("\n")[0])


def sft_pairs(kept: Sequence[Kept], target: Callable[[Kept], str] = answer_target,
              prompt: Callable | None = None) -> list[dict]:
    """Prompt/completion records: System 1 prompt (the bare input, or ``prompt(example)``, e.g. a
    judge's chat messages) -> the task's target (final answer only, never the intermediate tokens)."""
    return [{"id": k.example.id, "prompt": prompt(k.example) if prompt else k.example.input, "completion": target(k)}
            for k in kept]


def _load_dtype(base: LoadedModel) -> str:
    """The dtype to load another copy of ``base`` in (a student, a training process): its own."""
    return "auto" if base.dtype == "unknown" else base.dtype


def finetune(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings = LoraSettings(),
             out_dir: Path | None = None, progress: bool = True, name: str = "distill") -> TrainResult:
    """LoRA-fine-tune ``base`` on ``pairs``; return where the adapter is.

    The adapter is trained on ``base.model`` itself (no second copy of the weights: a 70B model
    could not afford one) and removed again afterwards, so ``base`` answers exactly as before;
    its dropout, cache and eval settings are restored even if training fails.
    """
    import torch

    if not pairs:
        raise ValueError(f"{name}: no training pairs (the filter kept nothing); cannot fine-tune")
    if simulated():
        return plan_only(base, pairs, settings, name)
    out = adapter_dir(base, pairs, settings, name, out_dir)
    if (done := read_trained(out)) is not None:
        return done

    processes = train_processes()
    if processes > 1:  # data parallel / FSDP / ZeRO-3 in processes of their own
        return launch(base, pairs, settings, name, out_dir, processes)
    torch.manual_seed(settings.seed)
    inner = base.model
    use_cache = inner.config.use_cache
    # recompute each layer's activations in the backward pass instead of keeping them: same
    # gradients, about a quarter more compute, and a fraction of the memory (~2.5 GB at batch 8).
    # Short batches (RaR, CoT answers: < 2k tokens a step) keep their activations: they are small.
    checkpointing = needs_checkpointing([tokenize(base, p) for p in pairs], settings)
    inner.config.use_cache = False
    if checkpointing:
        inner.activation_checkpointing_enable({"use_reentrant": False})
    model = with_lora(inner, settings)
    try:
        model.train()
        # long batches only: their freed activations are what fragments the heap; on short ones
        # (RaR, CoT answers) the mappings cost time (CoT's 12 steps: 126 s -> 171 s) and save nothing
        with own_mappings() if checkpointing else contextlib.nullcontext():
            return train_loop(base, model, pairs, settings, out, name, progress)
    finally:
        model.unload()  # take the LoRA layers out again: base.model is the unchanged base model
        if checkpointing:
            inner.activation_checkpointing_disable()
        if getattr(inner, "_require_grads_hooks", None):
            inner.disable_input_require_grads()  # the hook checkpointing put on the embeddings
        inner.config.use_cache = use_cache
        inner.eval()
        for p in inner.parameters():
            p.requires_grad_(False)
        del model
        free_memory()


def simulated() -> bool:
    """Whether this is a simulated run (``S2D_BACKEND=simulated``): students are planned, not trained."""
    from .backends import Settings

    return Settings.from_env().kind == "simulated"


PLANS: dict[str, dict] = {}  # student name -> its plan, in this process (the simulated run's work plan)


def plan_only(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings, name: str) -> TrainResult:
    """The simulated trainer: every pair tokenized as training would (`lora.tokenize`), every step
    planned (rows, tokens, micro-batches: `schedule.plan`) and checked against the budget; no
    gradient is computed and the student stays the base model. Raises if the plan misses its budget."""
    from .schedule import plan, plan_problems

    data = [tokenize(base, p) for p in pairs]
    p = plan(data, settings)
    problems = plan_problems(p, settings)
    if problems:
        raise RuntimeError(f"{name}: the training plan misses its budget: {'; '.join(problems)}")
    PLANS[name] = p.as_dict()
    return TrainResult(Path(f"simulated-{name}"), p.steps, p.pairs, p.tokens, 0.0, (), False, p.rows, p.warmup,
                       asdict(settings), p.as_dict())


def train_processes() -> int:
    """``S2D_TRAIN_PROCESSES`` (a notebook's ``TRAIN_PROCESSES``): 1 trains in this process; more
    launch `s2d_utils.train` with ``accelerate launch`` on that many processes."""
    raw = os.environ.get("S2D_TRAIN_PROCESSES", "1") or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"S2D_TRAIN_PROCESSES={raw!r}: expected a whole number >= 1")
    return int(raw)


def accelerate_config(config: str | None) -> str | None:
    """The accelerate config file as an absolute path: as given, or relative to the repository
    (notebooks run in notebooks/, so ``configs/accelerate/fsdp.yaml`` is read from the root)."""
    if not config:
        return None
    for path in (Path(config).expanduser(), paths.ROOT / config):
        if path.is_file():
            return str(path.resolve())
    raise FileNotFoundError(f"S2D_ACCELERATE_CONFIG={config!r}: no such file (here or under {paths.ROOT}); "
                            f"the shipped ones: {sorted(p.name for p in (paths.ROOT / 'configs' / 'accelerate').glob('*.yaml'))}")


def launch(base: LoadedModel, pairs: Sequence[dict], settings: LoraSettings, name: str, out_dir: Path | None,
           processes: int, config: str | None = None, save_every: int = 50) -> TrainResult:
    """Train with ``accelerate launch --num_processes N -m s2d_utils.train`` (``config``, else
    ``S2D_ACCELERATE_CONFIG``: one of configs/accelerate/*.yaml or the user's own) and return the
    adapter it wrote: the folder `finetune` would have written, found there by the notebooks.
    With neither a GPU nor a config, torchrun starts the N processes (data parallel over gloo)."""
    import subprocess
    import sys
    import tempfile

    import torch

    config = accelerate_config(config or os.environ.get("S2D_ACCELERATE_CONFIG") or None)
    if torch.cuda.is_available():
        # the kernel keeps the base on its GPUs (it evaluates the students next); what its allocator
        # holds cached beyond that (the last runs' K/V) goes back to the driver for the processes
        free_memory()
        torch.cuda.empty_cache()
    env = dict(os.environ)
    if config or torch.cuda.is_available():
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                    *(["--config_file", config] if config else [])]
    else:
        # no GPU: accelerate launches several CPU processes only through MPI; torchrun starts them
        # and accelerate joins them over gloo (ACCELERATE_USE_CPU), each with its share of the cores
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        env.update(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // processes)))
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        cmd = [*launcher, "-m", "s2d_utils.train", "--model", base.name, "--dtype", _load_dtype(base),
               "--pairs", str(pairs_file), "--name", name, "--settings", json.dumps(asdict(settings)),
               "--out-dir", str(out_dir or paths.CHECKPOINTS), "--save-every", str(save_every), "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return read_trained(adapter_dir(base, pairs, settings, name, out_dir), reused=False)


STUDENT_MODES = ("merged", "attached")


def student_mode(base: LoadedModel) -> str:
    """How a student is evaluated here: ``S2D_STUDENT_MODE`` if set, else "attached" on CUDA (the
    adapter on the loaded base: no second copy of a large model) and "merged" on CPU (a merged copy
    the fast engine runs; the committed cpu tables were made this way) and for a base accelerate
    offloads partly to the CPU or disk (`offloaded`: peft would re-place it to attach an adapter)."""
    on_gpus = str(base.device).startswith("cuda") and not offloaded(base)
    mode = os.environ.get("S2D_STUDENT_MODE") or ("attached" if on_gpus else "merged")
    if mode not in STUDENT_MODES:
        raise ValueError(f"S2D_STUDENT_MODE={mode!r}: expected one of {list(STUDENT_MODES)}")
    return mode


def offloaded(base: LoadedModel) -> list[str]:
    """The modules of ``base`` that its device map puts on the CPU or disk next to GPUs (accelerate
    offloading): peft takes such a model's hooks off and places it anew when an adapter attaches,
    and unloading the adapter does not put it back."""
    device_map = getattr(base.model, "hf_device_map", None) if base.loaded else None
    return sorted(k for k, v in (device_map or {}).items() if v in ("cpu", "disk"))


@contextmanager
def attached(base: LoadedModel, result: TrainResult | Path) -> Iterator[LoadedModel]:
    """The distilled System 1 as ``base.model`` with the LoRA adapter attached (peft, not merged),
    for the ``with`` block only; the adapter is removed on exit, leaving the base's modules and
    weights exactly as they were. No second copy of the base is loaded and nothing is merged into
    its weights. Generation goes through the model's own forward (the engine reads plain weights).
    Its fingerprint differs from the merged student's: the two round differently, so their cached
    samples are kept apart.
    """
    from peft import PeftModel

    adapter = Path(result.adapter_dir if isinstance(result, TrainResult) else result)
    if off := offloaded(base):
        raise ValueError(f"{base.name}: its device map puts {', '.join(off[:3])}{' ...' if len(off) > 3 else ''} on "
                         "the CPU or disk; peft would place the whole model anew to attach an adapter, and leave it "
                         "so. Evaluate its students with S2D_STUDENT_MODE=merged, or give the base GPUs only "
                         "(or serve it: README, 'At scale').")
    model = base.model
    peft_model = PeftModel.from_pretrained(model, str(adapter), adapter_name="student", is_trainable=False)
    peft_model.eval()
    fingerprint = hashlib.sha256(f"{base.fingerprint}+attached-lora@{adapter_hash(adapter)}".encode()).hexdigest()
    try:
        yield replace(base, model=peft_model, fingerprint=fingerprint, adapter=str(adapter))
    finally:
        restored = peft_model.unload()  # the LoRA layers out, the base layers back in their place
        assert restored is model


def load_distilled(base: LoadedModel, result: TrainResult | Path, weights: bool = True) -> LoadedModel:
    """The distilled System 1: ``base``'s checkpoint with the LoRA adapter merged in.
    ``weights=False``: the weights load on first use (a student a server generates for as an adapter)."""
    adapter = result.adapter_dir if isinstance(result, TrainResult) else Path(result)
    # a base whole on one GPU, or partly offloaded: the merged copy is placed anew, where it fits
    # beside the base (`models.placement`; accelerate's "auto" fills what the GPUs have left first);
    # a base split over GPUs only: the same split
    whole = isinstance(base.device_map, dict) and set(base.device_map) == {""}
    device_map = "auto" if whole or offloaded(base) else base.device_map
    return load_model(base.name, device=base.device, adapter=adapter, device_map=device_map,
                      dtype=_load_dtype(base), weights=weights)

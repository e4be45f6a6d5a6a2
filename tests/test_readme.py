"""The README's results and benchmark figures are the committed files in figures/ (tables, notes,
computed findings, the benchmark's JSON), not numbers typed by hand: each generated block must
equal what `make readme` builds from them."""

import json
from pathlib import Path

import pytest

from s2d_utils import readme as report
from s2d_utils import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("block", sorted(report.README_BLOCKS))
def test_readme_block_is_generated_from_the_committed_files(block):
    readme = (ROOT / "README.md").read_text()
    start, end = report.marks(block)
    built = report.README_BLOCKS[block](ROOT)
    assert f"{start}\n\n{built}\n\n{end}" in readme, f"README.md is out of date with figures/ ({block}): run `make readme`"


def test_every_committed_table_has_its_csv_and_figure():
    for nb in registry.NOTEBOOKS:
        assert (ROOT / "figures" / f"{nb.table}.csv").exists() and (ROOT / "figures" / f"{nb.figure}.png").exists()
    assert (ROOT / "figures" / f"{registry.SUMMARY_FIGURE}.png").exists()


def test_update_readme_rewrites_only_the_blocks(tmp_path):
    (tmp_path / "figures").mkdir()
    for nb in registry.NOTEBOOKS:
        (tmp_path / "figures" / f"{nb.table}.md").write_text(f"# title\n\n| a |\n|---|\n| {nb.table} |\n")
    (tmp_path / "figures" / f"{registry.SUMMARY_FILE}.md").write_text("# claims\n\n| claim | verdict |\n")
    (tmp_path / "figures" / "routing.md").write_text("# routing\n\n| method | threshold |\n")
    run = {k: 1.0 for k in ("hf_tokens_per_s", "engine_tokens_per_s", "speedup", "gemm_ceiling_tokens_per_s",
                            "greedy_identical", "prefill_tokens_per_s", "lora_train_tokens_per_s", "peak_rss_gb")}
    (tmp_path / "figures" / report.BENCH_FILE).write_text(json.dumps(
        {"models": {"m": run}, "batch_size": 128,
         "workload": {"prompts": 1, "samples": 1, "max_new_tokens": 1, "threads": 2, "date": "d", "machine": "x"}}))
    (tmp_path / "figures" / report.RUN_FILE).write_text(json.dumps(
        {"profile": "cpu", "commit": "abc", "date": "d", "machine": "x", "limits": {
            "cold_total_s": 5400, "notebook_cold_s": 1200, "notebook_warm_s": 120, "peak_rss_gb": 8.0},
         "cold": {"notebook_s": {"01_a": 60}, "peak_process_gb": 1.0, "peak_tree_gb": 1.5, "stage_s": {}}}))
    (tmp_path / "figures" / report.ESTIMATE_FILE).write_text(json.dumps(
        {"model": "m", "rates": {"engine_tokens_per_s": 1, "prefill_tokens_per_s": 2, "lora_train_tokens_per_s": 3},
         "rates_measured": {"date": "d", "machine": "x", "device": "cpu", "dtype": "bfloat16"},
         "notebooks": {"01_a": {"generation_s": 60, "prefill_s": 30, "fine_tune_s": 30, "total_s": 120,
                                "measured_s": 60}}}))
    readme = tmp_path / "README.md"
    blocks = "\n".join(f"{report.marks(b)[0]}\nstale 99.9%\n{report.marks(b)[1]}\nbetween" for b in report.README_BLOCKS)
    readme.write_text(f"intro\n{blocks}\nafter\n")
    assert report.update_readme(readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "stale" not in text
    assert "| table1_coin_flip |" in text and "**1.00x**" in text and not report.update_readme(readme)
    assert "| 01_a | 1.0 min | 0.5 min | 0.5 min | 2.0 min | 1.0 min | 50% |" in text


def test_readme_sizes_and_constants_are_the_codes():
    from s2d_utils import engine, profiles
    from s2d_utils.backends import local as generation  # the K/V budget moved with the local backend

    readme = (ROOT / "README.md").read_text()
    s = profiles.rar_sizes("coin_flip", "smoke")
    assert f"RaR: {s.n_test} test, {s.n_train} unlabeled inputs, {s.samples} samples" in readme
    for profile in ("smoke", "cpu"):
        assert profiles.PROFILE_MODELS[profile] in readme
    ll, cf = profiles.rar_sizes("last_letter", "cpu"), profiles.rar_sizes("coin_flip", "cpu")
    s2a, b, c = (profiles.sizes("s2a", "sycophancy", "cpu"), profiles.sizes("bsm", "judge", "cpu"),
                 profiles.sizes("cot", "gsm8k", "cpu"))
    assert ll.min_steps == cf.min_steps == s2a.min_steps == c.min_steps
    from s2d_utils.tasks import sycophancy

    unbiased = sum(e.meta["group"] == "unbiased" for e in sycophancy.load("test", n=s2a.n_test, seed=0,
                                                                           unbiased_share=s2a.unbiased_share))
    cpu_row = (f"RaR: {ll.n_test} / {cf.n_test} test, {ll.n_train} / {cf.n_train} unlabeled inputs, "
               f"{ll.samples} / {cf.samples} samples (last letter / coin flip); S2A: {s2a.n_test} test ({unbiased} unbiased), "
               f"{s2a.n_train} unlabeled inputs, {s2a.samples} samples; BSM: {b.n_test} test, {b.n_train} unlabeled pairs; "
               f"CoT: {c.n_test} test (maj@5/10 on {c.n_test_k} of them), {c.n_train} unlabeled inputs, {c.samples} "
               f"samples. Students: at least {ll.min_steps} optimizer steps (BSM: {b.min_steps}), each on {c.seeds} seeds")
    assert ll.seeds == cf.seeds == s2a.seeds == b.seeds == c.seeds
    assert cpu_row in readme
    cpu = cf
    steps = [profiles.sizes(m, t, "paper").steps for m, t in
             (("rar", "last_letter"), ("rar", "coin_flip"), ("s2a", "sycophancy"), ("bsm", "judge"), ("cot", "gsm8k"))]
    assert "its step counts (" + ", ".join(f"{x:,}" for x in steps) + ")" in readme
    assert f"{cpu.batch_size} rows in the cpu profile" in readme
    assert f"at most {engine.PREFILL_TOKENS:,}" in readme
    assert f"(at least {engine.MIN_SHARED} tokens)" in readme
    share = {0.5: "half", 0.25: "a quarter of"}[generation.GPU_KV_SHARE]  # the README says the share in words
    assert f"fit a {generation.CPU_KV_BUDGET_BYTES >> 30} GiB budget on CPU, {share} the free" in readme
    from s2d_utils import models

    assert f"at most {models.FIT_SHARE:.0%} of that GPU's free memory" in readme.replace("\n", " ")


def test_the_bench_table_has_a_column_per_model_and_dtype(tmp_path):
    (tmp_path / "figures").mkdir()
    run = {k: 2.0 for k in ("hf_tokens_per_s", "engine_tokens_per_s", "speedup", "gemm_ceiling_tokens_per_s",
                            "greedy_identical", "prefill_tokens_per_s", "lora_train_tokens_per_s", "peak_rss_gb")}
    (tmp_path / "figures" / report.BENCH_FILE).write_text(json.dumps(
        {"models": {"m": {**run, "dtype": "float32"}, "m@bfloat16": {**run, "engine_tokens_per_s": 3.0,
                                                                      "dtype": "bfloat16"}},
         "batch_size": 128,
         "workload": {"prompts": 1, "samples": 1, "max_new_tokens": 1, "threads": 2, "date": "d", "machine": "x"}}))
    text = report.readme_bench(tmp_path)
    assert text.startswith("| measure | m, fp32 | m, bf16 |")
    assert "| s2d engine, 128 rows in flight (tokens/s) | 2.0 | 3.0 |" in text


def test_the_llama_server_block_shows_each_slot_count_and_the_ratios(tmp_path):
    (tmp_path / "figures").mkdir()
    assert "Not measured yet" in report.readme_bench_llama(tmp_path)
    load = lambda f: {"local_tokens_per_s": {"float32": 40.0 * f, "bfloat16": 20.0 * f},  # noqa: E731
                      "llama_tokens_per_s": {"1": 30.0 * f, "4": 80.0 * f}, "best_slots": 4,
                      "llama_over_local": {"float32": 2.0, "bfloat16": 4.0}}
    run = {"greedy": load(1), "sampled": load(2), "greedy_identical_to_fp32": {"1": 5, "4": 4}, "prompts": 8,
           "samples": 4, "gguf": "m.gguf"}
    (tmp_path / "figures" / "bench_llama.json").write_text(json.dumps(
        {"date": "d", "machine": "2 CPU cores", "max_new_tokens": 48, "slots": [1, 4], "models": {"m": run}}))
    text = report.readme_bench_llama(tmp_path)
    assert "| *greedy*: llama-server, -np 1 / 4 (tokens/s) | 30.0 / 80.0 |" in text
    assert "| *sampled, 4 a prompt*: local engine, fp32 / bf16 (tokens/s) | 80.0 / 40.0 |" in text
    assert "| **greedy: llama-server at its best -np / local fp32, bf16** | **2.00x, 4.00x** (-np 4) |" in text
    assert "| greedy completions identical to local fp32 | 5 of 8 (-np 1), 4 of 8 (-np 4) |" in text


def test_a_work_plan_from_before_three_seeds_says_so(tmp_path):
    plans = tmp_path / "docs" / "workplans"
    plans.mkdir(parents=True)
    plan = {"notebooks": [{"notebook": "01_rar_last_letter", "training": {"Distill": {"pairs": 3, "steps": 2,
                                                                                    "tokens_per_step": 1000}},
                           "generation": {"calls": 1, "prompt_tokens": 1, "cap_tokens": 1}, "generation_gpu_h": 1.0,
                           "training_gpu_h": 1.0, "peak_rss_gb": 1.0,
                           "rates": {"decode_tokens_per_s": 1, "prefill_tokens_per_s": 1, "source": "s", "gpus": 1,
                                     "gpu": "g"}}], "wall_s": 60, "peak_rss_gb": 1.0}
    (plans / "gpu.json").write_text(json.dumps(plan))
    assert "**This plan predates students on 3 seeds**" in report.readme_workplan(tmp_path)
    three = {"Distill": plan["notebooks"][0]["training"]["Distill"]}
    three.update({f"Distill (seed {s})": three["Distill"] for s in (1, 2)})
    plan["notebooks"][0]["training"] = three
    (plans / "gpu.json").write_text(json.dumps(plan))
    text = report.readme_workplan(tmp_path)
    assert "predates" not in text and "2 x 1.0k, each on 3 seeds" in text


def test_the_verdict_digest_groups_claims_by_verdict_over_seeds():
    md = ("| claim | method | verdict | evidence |\n|---|---|---|---|\n"
          "| beats | S2A (biased inputs) | **held (3 of 3 seeds)** | [seed 0] a \\| b. |\n"
          "| near | S2A (biased inputs) | **flips between seeds: held in 1 of 3: held (seed 0) / not shown (seed 1)** | x |\n"
          "| beats | RaR, coin flip | **not testable** | untrained |\n"
          "| beats | S2A (unbiased inputs) | **not held (3 of 3 seeds)** | y |\n")
    text = report.verdict_digest(md)
    assert "- **held on every seed**: beats (S2A (biased inputs))." in text
    assert "- **flips between seeds**: near (S2A (biased inputs): held in 1 of 3)." in text
    assert "- **not testable**: beats (RaR, coin flip)." in text
    assert "- **not held on every seed**: beats (S2A (unbiased inputs))." in text

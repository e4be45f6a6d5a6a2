"""The README's results and benchmark figures, and those of the pages under docs/, are the committed
files in figures/ (tables, notes, computed findings, verdicts, the benchmarks' JSON), not numbers typed
by hand: each generated block must equal what `make readme` builds from them. The README stays one
screen of answers: short, its first table the results at a glance."""

import csv
import json
import re
from pathlib import Path

import pytest

from s2d_utils import readme as report
from s2d_utils import registry, tables

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")


@pytest.mark.parametrize("page,block", [(p, b) for p, blocks in report.PAGES.items() for b in blocks])
def test_each_pages_blocks_are_generated_from_the_committed_files(page, block):
    text = (ROOT / page).read_text()
    assert report.block(block, page, ROOT) in text, f"{page} is out of date with figures/ ({block}): run `make readme`"


def test_every_block_lives_on_exactly_one_page():
    placed = [b for blocks in report.PAGES.values() for b in blocks]
    assert sorted(placed) == sorted(report.README_BLOCKS)
    for name in report.README_BLOCKS:
        start = report.marks(name)[0]
        assert sum(start in (ROOT / page).read_text() for page in report.PAGES) == 1, name


def test_the_readme_is_one_screen_of_answers_and_links_to_the_rest():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250 and len(text) <= 25_000
    for page in report.PAGES:
        if page != "README.md":
            assert f"({page})" in text, f"the README does not link {page}"
    assert "(data/README.md)" in text and "(docs/testing.md)" in text and "(docs/notebooks.md)" in text


def test_the_first_table_of_the_readme_is_the_results_at_a_glance():
    text = (ROOT / "README.md").read_text()
    first = next(line for line in text.splitlines() if line.startswith("|"))
    assert first == tables.glance_table(ROOT / "figures").splitlines()[0]
    assert text.index(first) < text.index("fig_summary.png") < text.index("## Quickstart")


def _csv_numbers(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return {x for row in csv.reader(f) for cell in row for x in NUMBER.findall(cell)}


def _glance_rows(text: str) -> list[list[str]]:
    lines = [x for x in text.splitlines() if x.startswith("| ")][1:]
    return [[c.strip() for c in x.replace("\\|", "\0").split("|")[1:-1]] for x in lines]


def _check_glance(root: Path, text: str) -> int:
    """Every number of the glance table is in the csv of its method's table (the paper's and ours) or in
    the verdicts file (verdict and reason); ours are the csv's System 1 / System 2 / distilled cells."""
    figures = root / "figures"
    source = figures / tables.VERDICTS_JSON
    verdicts = (source if source.exists() else figures / "summary_verdicts.md").read_text()
    rows = _glance_rows(text)
    for claim, method, paper, ours, verdict, reason in rows:
        nb, group = tables.method_record(method)
        found = _csv_numbers(figures / f"{nb.table}.csv")
        for cell in (paper, ours):
            assert set(NUMBER.findall(cell)) <= found, (method, cell)
        with (figures / f"{nb.table}.csv").open(newline="") as f:
            by = {r["Method"]: r for r in csv.DictReader(f)}
        column = next(k for k in by[nb.system1] if k.endswith("(ours)") and (group is None or group.capitalize() in k))
        assert ours.startswith(" / ".join(by[r][column] or "n.a." for r in (nb.system1, nb.system2, nb.distilled)))
        for cell in (verdict, reason.removesuffix("...")):
            for x in NUMBER.findall(cell):
                assert x in NUMBER.findall(verdicts) or f"{x} " in verdicts or x in verdicts, (claim, method, x)
        assert len(reason) <= tables.REASON_CHARS and claim in verdicts and method in verdicts
    return len(rows)


def test_every_number_of_the_glance_table_is_in_the_file_it_came_from():
    text = report.readme_glance(ROOT)
    assert _check_glance(ROOT, text) == len(tables.verdict_rows(ROOT / "figures"))


def _fixture(tmp_path: Path, with_json: bool = True) -> Path:
    """A small figures/: the last-letter table's csv and two verdicts (as summary_verdicts.json writes
    them, or only the markdown table the notebooks wrote before it)."""
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "table1_last_letter.csv").write_text(
        "Method,n,Acc % (ours),95% CI,#Tokens (ours),Acc over seeds,Parse fail %,Cut %,Acc % (paper),#Tokens (paper)\n"
        "System 1,100,12.0,7.0-19.9,6.5,,10.0,0.0,30.0,27.1\n"
        "System 2: 2-step RaR,100,41.0,31.9-50.8,43.4,,7.0,2.0,44.5,41.5\n"
        "Distill System 2 (2-step RaR),100,38.3,29.4-48.1,5.0,sd 1.5: 37.0 / 40.0 / 38.0,0.0,0.0,98.0,25.5\n")
    rows = [{"claim": registry.BEATS, "method": "RaR, last letter", "verdict": "held",
             "verdict_per_seed": "held on 3 of 3 seeds", "reason": "the student is 26.3 points above System 1 on every seed",
             "evidence": "x", "evidence_per_seed": ["x"] * 3},
            {"claim": registry.NEAR, "method": "RaR, last letter",
             "verdict": "not shown",
             "verdict_per_seed": "held on 2 of 3 seeds (not shown on 1)", "reason": "keeps 88% of System 2's gain",
             "evidence": "y", "evidence_per_seed": ["y"] * 3}]
    if with_json:
        (figures / tables.VERDICTS_JSON).write_text(json.dumps(rows))
    (figures / "summary_verdicts.md").write_text(
        "# claims\n\n| claim | method | verdict | evidence |\n|---|---|---|---|\n"
        f"| {registry.BEATS} | RaR, last letter | **held (3 of 3 seeds)** | [seed 0] Distill 38.0% vs System 1 12.0%: "
        "+26.0 points (95% CI +17.1 to +35.2; 27 vs 1 discordant), n = 100, McNemar p < 1e-4; Distill is higher, "
        "Holm-adjusted p < 1e-4. [seed 1] more |\n")
    return figures


def test_the_glance_table_reads_the_verdicts_json(tmp_path):
    _fixture(tmp_path)
    text = tables.glance_table(tmp_path / "figures")
    assert ("| distilled System 1 beats System 1 | RaR, last letter | 30.0 / 44.5 / 98.0 (27.1 / 41.5 / 25.5 tok) | "
            "12.0 / 41.0 / 38.3 (6.5 / 43.4 / 5.0 tok) | **held** (held on 3 of 3 seeds) | the student is 26.3 points above "
            "System 1 on every seed |") in text
    assert "| **not shown** (held on 2 of 3 seeds (not shown on 1)) | keeps 88% of System 2's gain |" in text
    assert _check_glance(tmp_path, text) == 2


def test_without_the_json_the_glance_table_reads_the_markdown_verdicts(tmp_path):
    _fixture(tmp_path, with_json=False)
    rows = tables.verdict_rows(tmp_path / "figures")
    assert [r["verdict"] for r in rows] == ["held (3 of 3 seeds)"] and rows[0]["source"] == "summary_verdicts.md"
    assert rows[0]["reason"].startswith("seed 0: Distill 38.0% vs System 1 12.0%: +26.0 points")
    assert len(rows[0]["reason"]) <= tables.REASON_CHARS and rows[0]["reason"].endswith("...")
    assert _check_glance(tmp_path, tables.glance_table(tmp_path / "figures")) == 1


def test_what_readers_see_names_the_project_alone():
    pages = [ROOT / p for p in report.PAGES] + [ROOT / "docs" / "testing.md", ROOT / "docs" / "notebooks.md",
                                                ROOT / "data" / "README.md", ROOT / ".ci" / "run",
                                                ROOT / "benchmarks" / "device_check.sh"]
    for path in pages:
        text = path.read_text()
        for word in ("$OUT", "../shared", "build machine", "CPU machine", "(limit ", "bold: over", "byte-identical",
                     "the most the kit"):
            assert word not in text, f"{path.relative_to(ROOT)}: {word!r}"
    assert "limit" not in report.readme_record(ROOT) and "limit" not in report.readme_times(ROOT)


def test_the_run_record_names_the_commit_and_machine_of_the_json():
    run = json.loads((ROOT / "figures" / report.RUN_FILE).read_text())
    glance = report.readme_glance(ROOT)
    assert f"commit {run['commit']}" in glance and run["machine"] in glance
    assert run["machine"] in report.readme_times(ROOT) and run["machine"] in report.readme_record(ROOT)


def test_notes_every_table_carries_are_said_once_above_the_tables(tmp_path):
    (tmp_path / "figures").mkdir()
    for nb in registry.NOTEBOOKS:
        (tmp_path / "figures" / f"{nb.table}.md").write_text(
            f"# title\n\n| a |\n|---|\n| {nb.table} |\n\n- common note\n- own note of {nb.table}\n\n"
            "What these numbers say (computed from them):\n\n- a finding\n")
    text = report.readme_results(tmp_path)
    assert text.startswith("Notes that hold for every table below:\n\n- common note\n\n### ")
    assert text.count("common note") == 1 and text.count("- own note of ") == len(registry.NOTEBOOKS)
    assert text.count("What these numbers say") == len(registry.NOTEBOOKS)


def test_every_committed_table_has_its_csv_and_figure():
    for nb in registry.NOTEBOOKS:
        assert (ROOT / "figures" / f"{nb.table}.csv").exists() and (ROOT / "figures" / f"{nb.figure}.png").exists()
    assert (ROOT / "figures" / f"{registry.SUMMARY_FIGURE}.png").exists()


def test_update_page_rewrites_only_the_blocks(tmp_path):
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
    for nb in registry.NOTEBOOKS:
        (tmp_path / "figures" / f"{nb.table}.csv").write_text((ROOT / "figures" / f"{nb.table}.csv").read_text())
    (tmp_path / "figures" / "summary_verdicts.md").write_text((ROOT / "figures" / "summary_verdicts.md").read_text())
    assert report.update_page(readme, tuple(report.README_BLOCKS), tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "stale" not in text
    assert "| table1_coin_flip |" in text and "**1.00x**" in text
    assert not report.update_page(readme, tuple(report.README_BLOCKS), tmp_path)
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(f"{report.marks('routing')[0]}\n{report.marks('routing')[1]}\n")
    report.update_page(page, ("routing",), tmp_path)
    assert "](../figures/fig_routing.png)" in page.read_text()
    assert "| 01_a | 1.0 min | 0.5 min | 0.5 min | 2.0 min | 1.0 min | 50% |" in text


def test_the_pages_sizes_and_constants_are_the_codes():
    from s2d_utils import engine, profiles
    from s2d_utils.backends import local as generation  # the K/V budget moved with the local backend

    readme = "\n".join((ROOT / p).read_text() for p in (*report.PAGES, "docs/notebooks.md", "docs/testing.md"))
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
    text = tables.verdict_digest(md)
    assert "- **held on every seed**: beats (S2A (biased inputs))." in text
    assert "- **flips between seeds**: near (S2A (biased inputs): held in 1 of 3)." in text
    assert "- **not testable**: beats (RaR, coin flip)." in text
    assert "- **not held on every seed**: beats (S2A (unbiased inputs))." in text

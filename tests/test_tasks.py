import json

import pytest

from conftest import repo_data
from s2d_utils.tasks import coin_flip, last_letter


def test_last_letter_is_deterministic_by_seed():
    a = last_letter.load("test", n=20, seed=3)
    b = last_letter.load("test", n=20, seed=3)
    c = last_letter.load("test", n=20, seed=4)
    assert a == b
    assert [e.input for e in a] != [e.input for e in c]


def test_last_letter_paper_setup_uses_1200_unique_words_in_disjoint_splits():
    splits = {s: last_letter.load(s, seed=0) for s in ("train", "valid", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 200, "valid": 200, "test": 200}
    words = [w for exs in splits.values() for e in exs for w in e.meta["words"]]
    assert len(words) == 1200 and len(set(words)) == 1200


def test_last_letter_gold_and_question_format():
    ex = last_letter.load("train", n=1, seed=0)[0]
    w1, w2 = ex.meta["words"]
    assert ex.input == f'Take the last letters of the words in "{w1} {w2}" and concatenate them.'
    assert ex.gold == w1[-1] + w2[-1]
    assert last_letter.gold_answer(["apple", "banana"]) == "ea"
    four = last_letter.load("test", n=5, seed=0, k=4)
    assert all(len(e.meta["words"]) == 4 and len(e.gold) == 4 for e in four)


def test_prefix_property_and_size_errors():
    assert last_letter.load("test", n=5, seed=1) == last_letter.load("test", n=50, seed=1)[:5]
    with pytest.raises(ValueError, match="exceeds the test split's 200"):
        last_letter.load("test", n=201)
    with pytest.raises(ValueError, match="non-negative"):
        last_letter.load("test", n=-1)
    with pytest.raises(ValueError, match="split 'dev'"):
        coin_flip.load("dev", n=1)


def test_coin_flip_gold_is_flip_parity():
    exs = coin_flip.load("test", n=300, seed=0)
    for e in exs:
        assert e.gold == ("yes" if sum(e.meta["flips"]) % 2 == 0 else "no")
        a, b = e.meta["people"]
        fa, fb = e.meta["flips"]
        assert e.input == (f"A coin is heads up. {a} {'flips' if fa else 'does not flip'} the coin. "
                           f"{b} {'flips' if fb else 'does not flip'} the coin. Is the coin still heads up?")
    share_yes = sum(e.gold == "yes" for e in exs) / len(exs)
    assert 0.4 < share_yes < 0.6


def test_coin_flip_paper_sizes_and_no_test_question_in_train():
    train = coin_flip.load("train", seed=0)
    test = coin_flip.load("test", seed=0)
    assert (len(train), len(coin_flip.load("valid", seed=0)), len(test)) == (20000, 3333, 1333)
    assert not {e.input for e in train} & {e.input for e in test}
    assert coin_flip.load("test", n=10, seed=0) == coin_flip.load("test", n=10, seed=0)


def test_coin_flip_variants():
    base = coin_flip.load("test", n=2, seed=0)
    rev = coin_flip.load("test", n=2, seed=0, variant="flip_means_reverse")
    assert rev[0].input == base[0].input + " Flip means reverse."
    with pytest.raises(ValueError, match="variant='x'"):
        coin_flip.load("test", n=1, variant="x")


def test_rar_paper_files_are_read():
    ll = last_letter.load("test", source=repo_data("rephrase_and_respond"))
    assert len(ll) == 219
    assert ll[0].input == 'Take the last letters of the words in "Shannon Alejandro" and concatenate them.'
    assert ll[0].gold == "no"
    ll4 = last_letter.load("test", source=repo_data("rephrase_and_respond"), k=4)
    assert len(ll4) == 220 and ll4[0].gold == "enla"
    coins = coin_flip.load("test", source=repo_data("rephrase_and_respond"))
    assert len(coins) == 1333
    assert coins[0].input == ("A coin is heads up. hiram does not flip the coin. nicoletto flips the coin. "
                              "Is the coin still heads up?")
    assert coins[0].gold == "no"
    gpt4 = coin_flip.load("test", n=3, source=repo_data("rephrase_and_respond", "coin_val_gpt-4.json"))
    assert gpt4[0].gold == "yes" and gpt4[0].input.endswith("Flip means reverse.")
    with pytest.raises(ValueError, match="evaluation sets"):
        coin_flip.load("train", source=repo_data("rephrase_and_respond"))


def test_malformed_files_name_file_row_and_field(tmp_path):
    bad = tmp_path / "coins.json"
    bad.write_text(json.dumps([{"inputs": "Q: A coin is heads up. Is the coin still heads up?", "targets": "yes"},
                               {"inputs": "Q: A coin", "targets": "maybe"}]))
    with pytest.raises(ValueError, match=r"coins.json row 1: field 'targets' must be yes/no, got 'maybe'"):
        coin_flip.load("test", source=bad)
    missing = tmp_path / "ll.json"
    missing.write_text(json.dumps([{"question": 'Take the last letters of the words in "ab cd" and concatenate them.'}]))
    with pytest.raises(ValueError, match=r"ll.json row 0: field 'answer' must be a non-empty string"):
        last_letter.load("test", source=missing)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"question": 'Take the last letters of the words in "ab cd" and concatenate them.',
                                  "answer": "xx"}]))
    with pytest.raises(ValueError, match=r"wrong.json row 0: field 'answer' is 'xx'.*give 'bd'"):
        last_letter.load("test", source=wrong)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        last_letter.load("test", source=broken)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        coin_flip.load("test", source=tmp_path / "nothere.json")


def test_a_hub_dataset_id_is_read_with_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load(dataset_id, config=None, split=None):
        calls.append((dataset_id, split))
        return [{"inputs": "Q: A coin is heads up. Ann flips the coin. Is the coin still heads up?", "targets": "no"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (ex,) = coin_flip.load("test", source="someone/coin-flip")
    assert calls == [("someone/coin-flip", "test")] and ex.gold == "no" and ex.input.startswith("A coin is heads up.")

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="'someone/coin-flip' .*could not be read .*point the source at a local copy"):
        last_letter.load("test", source="someone/coin-flip")


def test_every_profiles_sycophancy_test_set_loads_with_its_groups():
    """The cpu profile asks for 200 test inputs, 50 or more unbiased (issue 18); the analog's test
    split has fewer facts, so a second pass asks them again in the other group (never twice in one)."""
    from collections import Counter

    from s2d_utils import profiles
    from s2d_utils.tasks import sycophancy

    for profile in ("smoke", "cpu", "gpu"):
        z = profiles.sizes("s2a", "sycophancy", profile)
        test = sycophancy.load("test", n=z.n_test, seed=0, unbiased_share=z.unbiased_share)
        groups = Counter(e.meta["group"] for e in test)
        assert len(test) == z.n_test and len({e.id for e in test}) == z.n_test
        for g in groups:
            questions = [e.meta["question"] for e in test if e.meta["group"] == g]
            assert len(questions) == len(set(questions)), (profile, g)
        if profile == "cpu":
            assert z.n_test >= 200 and groups["unbiased"] >= 50

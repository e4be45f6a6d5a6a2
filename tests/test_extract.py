import pytest

from s2d_utils.distill import answer_completion
from s2d_utils.tasks import coin_flip, last_letter


@pytest.mark.parametrize("text,strict,flexible", [
    ("ea", "ea", "ea"),
    ("  EA. ", "ea", "ea"),
    ("The answer is ea.", "ea", "ea"),
    ('The answer is: "ea"', "ea", "ea"),
    ('The last letters are "e" and "a", so together "ea".', None, "ea"),
    ("first the answer is xy, no wait, the answer is ea", "ea", "ea"),
    ("Concatenating gives ea", None, "ea"),
    ("", None, None),
    ("42 !!", None, None),
])
def test_last_letter_extract(text, strict, flexible):
    assert last_letter.extract(text, "strict") == strict
    assert last_letter.extract(text, "flexible") == flexible


@pytest.mark.parametrize("text,strict,flexible", [
    ("Yes.", "yes", "yes"),
    ("no, it is tails up", "no", "no"),
    ("The answer is **No**.", "no", "no"),
    ("Let's think. Two flips cancel out, so yes.", None, "yes"),
    ("After the flip the coin is tails up.", None, "no"),
    ("So the coin is still heads up.", None, "yes"),
    ("Is the coin still heads up? Hard to say.", None, None),
    ("I cannot know", None, None),
    ("nobody knows; yesterday it was", None, None),
])
def test_coin_flip_extract(text, strict, flexible):
    assert coin_flip.extract(text, "strict") == strict
    assert coin_flip.extract(text, "flexible") == flexible


def test_distillation_target_parses_strictly():
    assert last_letter.extract(answer_completion("ea"), "strict") == "ea"
    assert coin_flip.extract(answer_completion("no"), "strict") == "no"
    assert answer_completion("yes") == "The answer is yes."


def test_score_and_bad_mode():
    assert last_letter.score("EA", "ea") and not last_letter.score(None, "ea")
    assert coin_flip.score("yes", "yes") and not coin_flip.score("no", "yes")
    with pytest.raises(ValueError, match="mode='loose'"):
        coin_flip.extract("yes", "loose")

import pytest

from s2d_utils.distill import answer_completion
from s2d_utils.tasks import Example, coin_flip, last_letter

TWO_WORDS = Example("x", 'Take the last letters of the words in "apple banana" and concatenate them.', None,
                    {"words": ("apple", "banana")})


@pytest.mark.parametrize("text,strict,flexible", [
    ("ea", "ea", "ea"),
    ("  EA. ", "ea", "ea"),
    ("The answer is ea.", "ea", "ea"),
    ('The answer is: "ea"', "ea", "ea"),
    ("The answer is **ea**.", "ea", "ea"),
    ('The last letters are "e" and "a", so together "ea".', None, "ea"),
    ("The last letters are e and a, concatenated: **ea**", None, "ea"),
    ("first the answer is xy, no wait, the answer is ea", "ea", "ea"),
    ("Concatenating gives ea", None, "ea"),
    # a story is not an answer: its last word cannot be two words' last letters
    ("Once upon a time an apple met a banana and they lived happily ever after.", None, None),
    ('The word "apple" ends in e.', None, None),
    ("", None, None),
    ("42 !!", None, None),
])
def test_last_letter_extract(text, strict, flexible):
    assert last_letter.extract(text, "strict", TWO_WORDS) == strict
    assert last_letter.extract(text, "flexible", TWO_WORDS) == flexible


def test_last_letter_flexible_without_the_question_accepts_only_short_strings():
    assert last_letter.extract("so we get ea", "flexible") == "ea"
    assert last_letter.extract("then they concatenated", "flexible") is None  # 12 letters
    assert last_letter.extract("so we get eat", "flexible", TWO_WORDS) is None  # 3 letters for 2 words


@pytest.mark.parametrize("text,strict,flexible", [
    ("Yes.", "yes", "yes"),
    ("no, it is tails up", "no", "no"),
    ("The answer is **No**.", "no", "no"),
    ("Let's think. Two flips cancel out, so yes.", None, "yes"),
    ("Two flips cancel out. Yes, it is.", None, "yes"),
    ("After the flip the coin is tails up.", None, "no"),
    ("So the coin is still heads up.", None, "yes"),
    ("Is the coin still heads up? Hard to say.", None, None),
    ("We must decide whether the coin is still heads up.", None, None),
    ("I cannot know", None, None),
    ("nobody knows; yesterday it was", None, None),
    ("There is no way to tell.", None, None),
    # the decision for contradictions: an answer and a stated state that disagree parse to nothing
    ("No, the coin is still heads up.", None, None),
    ("The answer is yes. After two flips the coin is tails up.", None, None),
    ("No. The coin is tails up.", "no", "no"),
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


def test_the_lenient_reading_lets_the_explicit_answer_win_a_contradiction():
    assert coin_flip.lenient_extract("No, the coin is still heads up.") == "no"
    assert coin_flip.lenient_extract("The coin is tails up.") == "no"
    assert coin_flip.lenient_extract("I cannot know") is None
    with pytest.raises(ValueError, match="conflicts='guess'"):
        coin_flip.extract("yes", conflicts="guess")

"""The language check: py3langid over a candidate set, abstaining on short or unsure text, never flagging plain
English in an English Datanet (issue 15; measured on a larger labelled sample by bench/language.py)."""

from __future__ import annotations

import pytest

from datanets import checks, language
from datanets.models import LANGUAGE_CHOICES

from .factories import DatanetFactory, submit, texts

# plain English that the stop-word counter took for Portuguese ("a", "do", "as", "no" are Portuguese stop words)
ENGLISH_IT_CALLED_PORTUGUESE = [
    "Use a comma as a separator, no spaces.",
    "Do a push-up, then do a sit-up, as many as you can.",
    "Is it a good idea to buy a car now, or do I wait a year?",
    "Do as I say, not as I do.",
    "No, a cat is not a dog.",
]


def test_every_language_a_datanet_can_declare_is_a_candidate() -> None:
    assert {code for code, _ in LANGUAGE_CHOICES} <= set(language.CANDIDATES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The library opens at nine in the morning and closes at six in the evening.", "en"),
        ("La bibliothèque ouvre à neuf heures du matin et ferme à dix-huit heures.", "fr"),
        ("Die Bibliothek öffnet um neun Uhr morgens und schließt um achtzehn Uhr.", "de"),
        ("A biblioteca abre às nove da manhã e fecha às seis da tarde.", "pt"),
        ("Библиотека открывается в девять утра и закрывается в шесть вечера.", "ru"),
        ("图书馆工作日早上九点开门，晚上六点关门。", "zh"),  # noqa: RUF001
    ],
)
def test_it_names_the_language_of_a_sentence(text: str, expected: str) -> None:
    detected, probability = language.identify(text)

    assert detected == expected and probability >= language.MIN_CONFIDENCE


@pytest.mark.parametrize("text", ["hello world", "ok", "déjà vu", "Paris", "42", ""])
def test_it_abstains_on_a_word_or_two(text: str) -> None:
    assert language.identify(text)[0] == language.UNDETERMINED


@pytest.mark.parametrize("text", [*ENGLISH_IT_CALLED_PORTUGUESE, "Translate 'buenos días' into English."])
def test_plain_english_is_english_or_undetermined_never_another_language(text: str) -> None:
    assert language.identify(text)[0] in ("en", language.UNDETERMINED)


@pytest.mark.django_db
def test_the_check_flags_a_portuguese_record_in_an_english_datanet_and_no_english_one() -> None:
    # given
    portuguese = "A biblioteca abre às nove da manhã e fecha às seis da tarde durante a semana."
    contribution = submit(DatanetFactory(language="en"), content=texts(*ENGLISH_IT_CALLED_PORTUGUESE, portuguese))

    # when
    checks.contribution_check(contribution_id=contribution.id)

    # then
    contribution.refresh_from_db()
    evidence = contribution.checks["language"]
    assert evidence["status"] == "warn" and evidence["mismatched"] == 1
    [example] = evidence["examples"]
    assert example["detected"] == "pt" and example["confidence"] >= language.MIN_CONFIDENCE
    assert example["record_id"] == contribution.records.get(position=len(ENGLISH_IT_CALLED_PORTUGUESE)).id
    assert evidence["detected"].get("pt") == 1 and "py3langid" in evidence["method"]
    assert set(evidence["detected"]) <= {"en", "pt", language.UNDETERMINED}

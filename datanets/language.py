"""Which language a record is written in: py3langid (a maintained langid.py, its model inside the wheel), restricted
to the languages people contribute here and held to a length and a confidence below which it says nothing.

The rule, measured by ``bench/language.py`` on a labelled sample of 13 languages (docs/benchmarks.md):

- candidates: the languages a Datanet can declare plus common others, most with scripts of their own
  (``CANDIDATES``). Over all of langid's 97 languages a short English question comes out as Aragonese; among these
  it comes out English. Close relatives of a declarable language that nobody declares (Danish, Czech, Ukrainian,
  Romanian) are left out: each split the confidence of its neighbour (Swedish, Polish, Russian) on short records
  and cost accuracy in the bench, and a record in one of them still comes out as *another* language than the
  declared one, which is all the check needs.
- abstain ("undetermined") when the text has fewer than ``MIN_LETTERS`` letters (a word or two says nothing), or
  when the best language's probability is under ``MIN_CONFIDENCE``.
- a record is flagged only when a language other than the declared one was determined: undetermined is never a
  mismatch, so plain English is never flagged in an English Datanet for being short or odd.

The identifier loads once per process, on first use (about 1.5 s), so a web process that never runs the checks never
loads it; it then reads about 5,000 short records a second (bench/language.py), each cut to its first
``MAX_CHARS`` characters.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Final

from py3langid.langid import MODEL_FILE, LanguageIdentifier

DECLARABLE: Final = ("en", "fr", "de", "es", "it", "pt", "nl")
CANDIDATES: Final = (*DECLARABLE, "ru", "pl", "tr", "sv", "el", "he", "ar", "hi", "th", "zh", "ja", "ko")
MIN_LETTERS: Final = 10
MIN_CONFIDENCE: Final = 0.9
MAX_CHARS: Final = 2_000  # a record's first 2,000 characters say its language as well as all of it, at a bounded cost
UNDETERMINED: Final = "undetermined"
METHOD: Final = (
    f"py3langid 0.4.0 over {len(CANDIDATES)} candidate languages; undetermined under {MIN_LETTERS} letters or "
    f"below {MIN_CONFIDENCE:.0%} confidence"
)

_LETTER = re.compile(r"[^\W\d_]")
_lock = threading.Lock()


@functools.cache
def _identifier() -> LanguageIdentifier:
    # set_languages changes the identifier in place: done once, under a lock, before anyone classifies with it
    with _lock:
        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        identifier.set_languages(list(CANDIDATES))
        return identifier


def identify(text: str) -> tuple[str, float]:
    """The likeliest of ``CANDIDATES`` for ``text`` and its probability (0..1, over the candidates), or
    ``("undetermined", probability)`` when the text is too short or the identifier too unsure (module docstring)."""
    text = text[:MAX_CHARS]
    if len(_LETTER.findall(text)) < MIN_LETTERS:
        return UNDETERMINED, 0.0
    language, probability = _identifier().classify(text)
    if probability < MIN_CONFIDENCE:
        return UNDETERMINED, probability
    return language, probability

"""Usernames people cannot be fooled by: no invisible characters, no mixing of scripts, and none that looks like
another user's name (Unicode TR39 skeletons).

The confusables table is the one `confusable-homoglyphs` ships (generated from Unicode's ``confusables.txt``).
That package keeps it as "character -> characters it can be confused with", in both directions; TR39 maps every
source to one prototype, and a prototype is never a source, so each prototype is the centre of a star in that
graph: the node with more than one neighbour, or the multi-character one. A two-node star has no such sign, and
either member serves as its prototype (the smaller, to be deterministic): skeletons are only ever compared.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from confusable_homoglyphs.categories import alias
from django.core.exceptions import ValidationError

SKELETON_MAX_LENGTH = 300

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) outside the Cc/Cf categories, which are refused by
# category: Hangul fillers and other letters or marks that render as nothing.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0x1D173, 0x1D17A),  # musical symbol formatting
    (0xE0000, 0xE0FFF),  # tags and variation selectors supplement
)
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}

# TR39's "highly restrictive" level: one script, or Latin with the scripts Chinese, Japanese and Korean are
# written in together. COMMON and INHERITED (digits, punctuation, combining marks) go with any script.
_NEUTRAL_SCRIPTS = {"COMMON", "INHERITED"}
_ALLOWED_MIXES = (
    {"LATIN", "HAN", "HIRAGANA", "KATAKANA"},
    {"LATIN", "HAN", "BOPOMOFO"},
    {"LATIN", "HAN", "HANGUL"},
)


def _invisible(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) in _REFUSED_CATEGORIES or any(lo <= code <= hi for lo, hi in _IGNORABLE_RANGES)


def username_scripts(name: str) -> set[str]:
    """The scripts ``name`` is written in, leaving out those shared by all (digits, punctuation, marks)."""
    return {alias(char) for char in name} - _NEUTRAL_SCRIPTS


def username_problem(name: str) -> ValidationError | None:
    """Why ``name`` may not be a username, or None: an invisible or formatting character, a mix of scripts that
    TR39 does not allow together (a Cyrillic "a", U+0430, among Latin letters), or a skeleton too long to index."""
    if invisible := sorted({f"U+{ord(c):04X}" for c in name if _invisible(c)}):
        return ValidationError(
            "A username can't contain invisible or formatting characters (%(chars)s).",
            code="invisible",
            params={"chars": ", ".join(invisible)},
        )
    scripts = username_scripts(name)
    if len(scripts) > 1 and not any(scripts <= mix for mix in _ALLOWED_MIXES):
        return ValidationError(
            "A username must be written in one script; this one mixes %(scripts)s, whose letters can look alike.",
            code="mixed_script",
            params={"scripts": ", ".join(sorted(s.title() for s in scripts))},
        )
    if len(username_skeleton(name)) > SKELETON_MAX_LENGTH:
        return ValidationError("This username is too long once normalized.", code="too_long")
    return None


@cache
def _prototypes() -> dict[str, str]:
    from confusable_homoglyphs.confusables import confusables_data  # its 7 MB table: loaded on the first username check

    table: dict[str, str] = {}
    for char, entries in confusables_data.items():
        if len(char) != 1 or len(entries) != 1:
            continue  # a string, or a character with several look-alikes: a prototype, kept as it is
        other = entries[0]["c"]
        if len(other) > 1 or len(confusables_data.get(other, ())) > 1:
            table[char] = other
        else:
            table[char] = min(char, other)
    return {char: prototype for char, prototype in table.items() if char != prototype}


def username_skeleton(name: str) -> str:
    """The TR39 skeleton of ``name``, folded to lower case: two names with the same skeleton look alike.

    Compatibility-normalized first (fullwidth ``foo`` is ``foo``), invisible characters dropped, every character
    replaced by its prototype before case is folded (capital ``I`` looks like ``l``, not like ``i``), then again
    after (``0`` maps to ``O``, which folds to ``o``). Names that differ only in case may still differ here
    (``Ian``, ``ian``): the sign-up checks those apart.
    """
    prototypes = _prototypes()
    text = unicodedata.normalize("NFKC", name)
    for _ in range(3):  # a prototype's case fold can be another character's source; two rounds settle it
        decomposed = unicodedata.normalize("NFD", text)
        mapped = "".join(prototypes.get(c, c) for c in decomposed if not _invisible(c))
        folded = unicodedata.normalize("NFD", mapped).casefold()
        if folded == text:
            break
        text = folded
    return text

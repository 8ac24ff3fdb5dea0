"""English text for captions and zero-shot prompts: indefinite articles and prompt templates.

Prompts must read like the captions a model was trained on ("an arrow", not "a arrow"), so every
reader and built-in dataset fills its templates here.
"""

from __future__ import annotations

import re

from .errors import DatasetError

# Spelling exceptions to "an before a vowel letter" (by sound: "a one", "a unicorn", "an hour").
_CONSONANT_SOUND_PREFIXES = ("one", "once", "uni", "use", "usu", "uti", "eu", "ewe", "ufo")
_VOWEL_SOUND_PREFIXES = ("hour", "honest", "honour", "honor", "heir")


def starts_with_vowel_sound(phrase: str) -> bool:
    """Whether ``phrase`` takes "an" rather than "a" (a spelling rule with common exceptions)."""
    word = phrase.strip().lower()
    if word.startswith(_VOWEL_SOUND_PREFIXES):
        return True
    if word.startswith(_CONSONANT_SOUND_PREFIXES):
        return False
    return word[:1] in ("a", "e", "i", "o", "u")


def with_article(phrase: str) -> str:
    """Prefix ``phrase`` with the English indefinite article: ``'arrow' -> 'an arrow'``."""
    return f"{'an' if starts_with_vowel_sound(phrase) else 'a'} {phrase}"


def fill_template(template: str, display_name: str) -> str:
    """Put ``display_name`` into the ``{}`` of ``template``.

    When the template reads ``"a {}"`` and the name starts with a vowel (``"arrow"``), the article
    becomes ``"an"`` so that prompts read like the captions the model was trained on.
    """
    if "{}" not in template:
        raise DatasetError(f"prompt template {template!r} has no '{{}}' placeholder for the concept name")
    if starts_with_vowel_sound(display_name):
        template = re.sub(r"\b([Aa]) \{\}", r"\1n {}", template)
    return template.replace("{}", display_name)

"""Tokens back to readable text: undo fastai's rules and join words with natural spacing."""

from __future__ import annotations

import re

from ulmfit.tokenize.spec import BOS, EOS, FLD, PAD, SPECIAL_TOKENS, TK_MAJ, TK_REP, TK_UP, TK_WREP, UNK

WORD_START = "\u2581"
_DROP = {BOS, EOS, PAD, FLD, "xxfake"}
# No space before these (closing punctuation and English clitics as spaCy splits them).
_NO_SPACE_BEFORE = re.compile(r"^(?:[,.!?;:%)\]}…]+|'s|'m|'d|'ll|'re|'ve|n't|’s|’m|’d|’ll|’re|’ve|n’t)$",
                              re.IGNORECASE)
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#", "/", "-", "@", "\n", "\t"}
_GLUE_BOTH = {"/", "-", "@"}  # fastai's spec_add_spaces split "a/b"; spaCy splits "a-b" and e-mail addresses
_QUOTES = {'"', "'", "`", "``", "''"}
_SPECIAL_SET = set(SPECIAL_TOKENS)


def _words(tokens: list[str]) -> list[str]:
    """Apply xxmaj/xxup/xxrep/xxwrep, drop markers. Returns words, with "\n"-like tokens kept."""
    out: list[str] = []
    i, n = 0, len(tokens)
    case = None
    while i < n:
        t = tokens[i]
        if t in _DROP:
            i += 1
            continue
        if t in (TK_MAJ, TK_UP):
            case = t
            i += 1
            continue
        if t in (TK_REP, TK_WREP) and i + 2 < n and tokens[i + 1].isdigit():
            count, what = int(tokens[i + 1]), tokens[i + 2]
            i += 3
            if t == TK_REP:
                out.append(_case(what, case) * count)
            else:
                out.extend([_case(what, case)] + [what] * (count - 1))
            case = None
            continue
        out.append(_case(t, case))
        case = None
        i += 1
    return out


def _case(word: str, case: str | None) -> str:
    if case == TK_UP:
        return word.upper()
    if case == TK_MAJ:
        return word[:1].upper() + word[1:]
    return word


def decode_words(tokens: list[str], lang: str = "en") -> str:
    """Decode word tokens (the "rules" tokenizer)."""
    parts: list[str] = []
    prev = None
    quote_open = False  # standalone quote marks alternate between opening and closing
    sentence_start = True
    for w in _words([t.replace(WORD_START, " ") for t in tokens]):
        if w == UNK:
            w = "<unk>"
        # fastai adds xxmaj only to words of 2+ letters, so "I" and a sentence-initial "A" come back lower.
        if len(w) == 1 and w.isalpha() and (sentence_start or (lang == "en" and w == "i")):
            w = w.upper()
        if w.strip():
            sentence_start = w in (".", "!", "?", "…") or (sentence_start and w in _QUOTES)
        glue = (not parts or prev in _NO_SPACE_AFTER or w.isspace() or prev.isspace() or w in _GLUE_BOTH
                or bool(_NO_SPACE_BEFORE.match(w)))
        if w in _QUOTES:
            glue = glue or quote_open  # a closing quote hugs the word before it
            quote_open = not quote_open
        elif prev in _QUOTES and quote_open:
            glue = True  # an opening quote hugs the word after it
        parts.append(w if glue else " " + w)
        prev = w
    return _tidy("".join(parts))


def decode_pieces(pieces: list[str], lang: str = "en") -> str:
    """Decode sentencepiece pieces: "▁" starts a word; special tokens are whole words."""
    # Turn pieces into word tokens: glue a piece to the previous one unless it starts a word.
    words: list[str] = []
    open_word = False  # may the next piece continue the last word?
    for p in pieces:
        if p in _SPECIAL_SET:
            words.append(p)
            open_word = False
        elif p.startswith(WORD_START) or not open_word:
            words.append(p.lstrip(WORD_START))
            open_word = True
        else:
            words[-1] += p
    words = [w for w in words if w]
    return decode_words(words, lang)


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return text.strip()


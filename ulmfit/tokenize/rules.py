"""The "rules" tokenizer: fastai's text rules + spaCy's tokenizer, token-for-token identical to fastai.

fastai tokenizes a text as ``TokenizeWithRules(SpacyTokenizer())``: the pre-rules
(``defaults.text_proc_rules``: fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces,
replace_all_caps, replace_maj, lowercase + xxbos), then ``spacy.blank(lang)``'s tokenizer with the special
tokens added as special cases, then the post-rule ``replace_space`` (a space inside a token becomes "▁").
We reuse fastai's rule functions as they are; only the spaCy step is made faster.

Why it is faster. spaCy caches the tokens of every whitespace-separated span, but stops caching for the
rest of a document as soon as one special case matched in it (``has_special`` in tokenizer.pyx; see spaCy
issue #1250). Every fastai text starts with the special case "xxbos", so spaCy re-runs its prefix/suffix/
infix regexes on every span of every document. We split the text into spaCy's spans ourselves (exactly as
``Tokenizer._tokenize_affixes`` does) and cache each span's tokens, computed by spaCy itself.

Why it is identical. Inside ``Tokenizer.__call__`` a span's tokens depend only on the span's text, except
for one document-level step: ``_apply_special_cases`` runs a PhraseMatcher for the multi-token special
cases (":)" seen as [":", ")"], "'s" as ["'", "s"], ...) over the whole token sequence, so a pattern can
also match across a space. Such a match is never merged (its text contains the space), but it wins
against shorter overlapping matches: in "wow:) )" the cross-span ":))" keeps the ":)" inside "wow:)" split.
A cross-span match needs a span ending with a pattern token x followed by a span starting with the next
pattern token y. We precompute those (x, y) pairs; when one could occur at a span boundary the document is
tokenized by spaCy whole (a few percent of documents), so the output is always what spaCy gives for the
whole text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ulmfit.tokenize.spec import SPECIAL_TOKENS

# Alternating runs of non-whitespace and whitespace. Python's `\s` and str.isspace() (spaCy's test)
# agree on every character.
_RUNS = re.compile(r"\S+|\s+")


def pre_rules() -> list:
    """fastai's default pre-tokenization rules (the same function objects fastai uses)."""
    from fastai.text.core import defaults

    return list(defaults.text_proc_rules)


def apply_rules(text: str, rules: list) -> str:
    for rule in rules:
        text = rule(text)
    return text


class SpacyRules:
    """Tokenizes texts exactly like fastai's ``TokenizeWithRules(SpacyTokenizer(lang))``, with a span cache."""

    max_cache = 1_000_000  # spans; bounded so a huge corpus cannot grow the cache without limit

    def __init__(self, lang: str = "en") -> None:
        import spacy
        from spacy.symbols import ORTH
        from spacy.tokenizer import Tokenizer

        from ulmfit.errors import UlmfitError

        try:
            nlp = spacy.blank(lang)
        except (ImportError, KeyError, ValueError) as e:  # spaCy raises ImportError for unknown codes
            raise UlmfitError(f"spaCy has no language {lang!r}: {e}",
                              hint="use a spaCy language code such as en, de, fr, xx") from None
        for tok in SPECIAL_TOKENS:
            nlp.tokenizer.add_special_case(tok, [{ORTH: tok}])
        self.lang = lang
        self.spacy = nlp.tokenizer
        self.rules = pre_rules()
        self._cache: dict[str, tuple[str, ...]] = {}
        # (x, y) pairs: consecutive tokens of a multi-token special-case pattern, as affix splitting alone
        # produces them (what the document-level PhraseMatcher sees). Taken over all rules: a superset
        # of the matcher's patterns, which only makes the fallback a little more frequent.
        t = self.spacy
        bare = Tokenizer(nlp.vocab, rules={}, prefix_search=t.prefix_search, suffix_search=t.suffix_search,
                         infix_finditer=t.infix_finditer, token_match=t.token_match, url_match=t.url_match)
        from spacy.symbols import ORTH as _ORTH

        pairs: set[tuple[str, str]] = set()
        first_map: dict[str, set[str]] = {}
        last_map: dict[str, set[str]] = {}
        for rule, subs in list(t.rules.items()):
            pattern = [w.text for w in bare(rule)]
            if len(pattern) < 2:
                continue
            pairs.update(zip(pattern, pattern[1:]))
            orths = [sub[_ORTH] if _ORTH in sub else sub.get("ORTH", "") for sub in subs]
            # After a match is retokenized, the span starts with the rule's first piece where the
            # matcher saw the pattern's first token (and likewise at the end).
            first_map.setdefault(orths[0], set()).add(pattern[0])
            last_map.setdefault(orths[-1], set()).add(pattern[-1])
        self._pairs = pairs
        self._pair_left = {x for x, _ in pairs}
        self._pair_right = {y for _, y in pairs}
        self._first_map = first_map
        self._last_map = last_map
        self.n_fallback = 0  # documents tokenized by spaCy whole because a cross-span match was possible
        # Ids mode (used by the token store): tokens as ids into a growing string table of this process.
        self.strings: list[str] = []
        self._table: dict[str, int] = {}
        self._id_cache: dict[str, tuple] = {}

    # --- span logic -------------------------------------------------------------------------------------
    def _spans(self, text: str) -> list[str]:
        """spaCy's spans: runs of non-space and of whitespace, one ' ' after a non-space run dropped."""
        runs = _RUNS.findall(text)
        if not runs:
            return []
        out = []
        ws = runs[0][0].isspace()  # runs alternate, so the parity tells each run's kind
        for r in runs:
            if ws:
                if out and r[0] == " ":  # the single separating space belongs to no token
                    r = r[1:]
                if r:
                    out.append(r)
            else:
                out.append(r)
            ws = not ws
        return out

    def _span_entry(self, span: str) -> tuple:
        raw = [w.text for w in self.spacy(span)]
        toks = tuple(w.replace(" ", "▁") for w in raw)  # fastai's replace_space post-rule
        # The tokens the document-level matcher could see at this span's two ends (see module doc).
        first, last = raw[0], raw[-1]
        starts = ({first} | self._first_map.get(first, set())) & self._pair_right
        ends = ({last} | self._last_map.get(last, set())) & self._pair_left
        entry = (toks, ends or None, starts or None)
        if len(self._cache) < self.max_cache:
            self._cache[span] = entry
        return entry

    def tokenize_processed(self, text: str) -> list[str]:
        """Tokens of a text the pre-rules have already been applied to."""
        cache = self._cache
        out: list[str] = []
        prev_ends = None
        for span in self._spans(text):
            entry = cache.get(span)
            if entry is None:
                entry = self._span_entry(span)
            toks, ends, starts = entry
            if prev_ends is not None and starts is not None and any(
                    (x, y) in self._pairs for x in prev_ends for y in starts):
                self.n_fallback += 1
                return [w.text.replace(" ", "▁") for w in self.spacy(text)]
            out.extend(toks)
            prev_ends = ends
        return out

    def _id_of(self, tok: str) -> int:
        i = self._table.get(tok)
        if i is None:
            i = self._table[tok] = len(self.strings)
            self.strings.append(tok)
        return i

    def ids(self, texts: Iterable[str]) -> Iterator[list[int]]:
        """Like __call__, but each token as its index in `self.strings` (which grows as needed).

        The cache then holds ids, so a cached span costs one dict lookup and one list extend.
        """
        rules, cache, id_of = self.rules, self._id_cache, self._id_of
        for text in texts:
            text = apply_rules(str(text), rules)
            out: list[int] = []
            prev_ends = None
            for span in self._spans(text):
                entry = cache.get(span)
                if entry is None:
                    toks, ends, starts = self._cache.get(span) or self._span_entry(span)
                    entry = (tuple(id_of(t) for t in toks), ends, starts)
                    if len(cache) < self.max_cache:
                        cache[span] = entry
                ids, ends, starts = entry
                if prev_ends is not None and starts is not None and any(
                        (x, y) in self._pairs for x in prev_ends for y in starts):
                    self.n_fallback += 1
                    out = [id_of(w.text.replace(" ", "▁")) for w in self.spacy(text)]
                    break
                out.extend(ids)
                prev_ends = ends
            yield out

    def __call__(self, texts: Iterable[str]) -> Iterator[list[str]]:
        rules = self.rules
        for text in texts:
            yield self.tokenize_processed(apply_rules(str(text), rules))

"""The "rules" tokenizer: fastai's text rules + spaCy's tokenizer, token-for-token identical to fastai.

fastai tokenizes a text (in ``tokenize_texts`` / ``tokenize_df`` / ``TextBlock``, i.e. ``parallel_tokenize``
with ``TokenizeWithRules(SpacyTokenizer(lang))``) as: the pre-rules ``defaults.text_proc_rules`` (fix_html,
replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces, replace_all_caps, replace_maj, lowercase,
which adds "xxbos"), then ``spacy.blank(lang)``'s tokenizer with the special tokens added as special cases,
then the post-rule ``replace_space`` (a space inside a token becomes "▁"). We call fastai's own rule
functions; what we change is how often the expensive steps run.

1. spaCy caches the tokens of each whitespace-separated span, but stops caching for the rest of a document
   once a special case matched in it (``has_special`` in spaCy's tokenizer.pyx). Every fastai text starts
   with the special case "xxbos", so spaCy re-runs its affix regexes on every span of every document. We
   split the text into spaCy's spans ourselves (as ``Tokenizer._tokenize_affixes`` does: runs of
   non-space and of whitespace, the one ' ' after a non-space run dropped) and cache each span's tokens,
   computed by spaCy itself.
2. The last three rules act on each whitespace-separated word alone (their regexes are anchored on
   whitespace or the text's ends; lower() of a word does not depend on its neighbours), so we apply them
   per distinct word, inside the same cache: one dict lookup turns a raw word into its token ids.

Why it stays identical. A span's tokens depend only on the span's text except for one document-level
step: ``_apply_special_cases`` runs a PhraseMatcher for the multi-token special cases (":)" seen as
[":", ")"], "'s" as ["'", "s"], ...) over the whole token sequence, so a pattern can also match across a
space. Such a match is never merged (its text contains the space), but it wins against shorter
overlapping matches: in "wow:) )" the cross-span ":))" keeps the ":)" inside "wow:)" split. A cross-span
match needs a span ending with a pattern token x followed by a span starting with the next pattern token
y. We precompute those (x, y) pairs; when one could occur at a span boundary, the document is tokenized by
spaCy whole (a few percent of documents), so the output is always what spaCy gives for the whole text.
Tests compare against fastai on tricky and randomly glued texts; the benchmark on 10,000 IMDb reviews.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ulmfit.tokenize.spec import BOS, SPECIAL_TOKENS

# Alternating runs of non-whitespace and whitespace. Python's `\s`, str.isspace() (spaCy's test) and
# str.strip() agree on every character.
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
    """Tokenizes texts exactly like fastai's ``TokenizeWithRules(SpacyTokenizer(lang))``, with caches.

    Tokens are numbered in ``self.strings`` (a table that grows as new tokens appear); ``ids`` yields those
    numbers, ``__call__`` the strings.
    """

    max_cache = 2_000_000  # cached words/spans; bounded so a huge corpus cannot grow it without limit

    def __init__(self, lang: str = "en") -> None:
        import spacy
        from fastai.text.core import lowercase, replace_all_caps, replace_maj, replace_space
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
        # Lexical attributes (like_num, shape, ...) never change how text is split; skipping them halves
        # the cost of every span spaCy has not seen.
        nlp.vocab.lex_attr_getters = {}
        self.lang = lang
        self.spacy = nlp.tokenizer
        self.rules = pre_rules()
        self._replace_space = replace_space
        # The word-level fast path needs fastai's default rule order: text-level rules, then exactly
        # replace_all_caps, replace_maj, lowercase. Anything else takes the plain path.
        tail = [replace_all_caps, replace_maj, lowercase]
        self._word_path = self.rules[-3:] == tail
        self._text_rules = self.rules[:-3] if self._word_path else self.rules
        self._word_rules = (replace_all_caps, replace_maj)

        # (x, y) pairs: consecutive tokens of a multi-token special-case pattern, as affix splitting alone
        # produces them (what the document-level PhraseMatcher sees). Taken over all rules: a superset
        # of the matcher's patterns, which only makes the fallback a little more frequent.
        t = self.spacy
        bare = Tokenizer(nlp.vocab, rules={}, prefix_search=t.prefix_search, suffix_search=t.suffix_search,
                         infix_finditer=t.infix_finditer, token_match=t.token_match, url_match=t.url_match)
        pairs: set[tuple[str, str]] = set()
        first_map: dict[str, set[str]] = {}
        last_map: dict[str, set[str]] = {}
        for rule, subs in list(t.rules.items()):
            pattern = [w.text for w in bare(rule)]
            if len(pattern) < 2:
                continue
            pairs.update(zip(pattern, pattern[1:]))
            orths = [sub.get(ORTH, sub.get("ORTH", "")) for sub in subs]
            # After a match is retokenized, the span starts with the rule's first piece where the
            # matcher saw the pattern's first token (and likewise at the end).
            first_map.setdefault(orths[0], set()).add(pattern[0])
            last_map.setdefault(orths[-1], set()).add(pattern[-1])
        self._pairs = pairs
        self._pair_left = {x for x, _ in pairs}
        self._pair_right = {y for _, y in pairs}
        self._first_map = first_map
        self._last_map = last_map

        self.n_fallback = 0  # segments of neighbouring spans tokenized by spaCy together
        self.n_whole = 0  # documents tokenized by spaCy whole
        self.strings: list[str] = []
        self._table: dict[str, int] = {}
        # word or span -> (token ids, tokens its right end may show the matcher, same for its left end)
        self._cache: dict[str, tuple] = {}
        self._span_cache: dict[str, list[str]] = {}
        self._bos = (self._id_of(BOS),)
        # Words not yet cached are tokenized many at a time, in one spaCy call on the words joined by "\n":
        # each "\n" becomes a token of its own, and no special-case pattern contains a whitespace token, so
        # no pattern can reach across it. (If a spaCy version ever had one, words go one by one.)
        self._batch_fill = not any(c.isspace() for x in self._pair_left | self._pair_right for c in x)
        self._markers = set(SPECIAL_TOKENS)

    # --- helpers ----------------------------------------------------------------------------------------
    def _id_of(self, tok: str) -> int:
        i = self._table.get(tok)
        if i is None:
            i = self._table[tok] = len(self.strings)
            self.strings.append(tok)
        return i

    @staticmethod
    def _spans(text: str) -> list[str]:
        """spaCy's spans: runs of non-space and of whitespace, the one ' ' after a non-space run dropped."""
        runs = _RUNS.findall(text)
        if not runs:
            return []
        out = []
        ws = runs[0][0].isspace()  # runs alternate, so parity tells each run's kind
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

    def _crosses(self, ends, starts) -> bool:
        return ends is not None and starts is not None and any((x, y) in self._pairs for x in ends for y in starts)

    def _edges(self, first: str, last: str) -> tuple:
        """Tokens the matcher may see at a token run's two ends (see module doc), or None."""
        starts = ({first} | self._first_map.get(first, set())) & self._pair_right or None
        ends = ({last} | self._last_map.get(last, set())) & self._pair_left or None
        return ends, starts

    def _entry(self, spans: list[str], text: str) -> tuple | None:
        """Cache entry (ids, ends, starts, text) for the spans of `text`; None if a matcher pattern could
        join two of them (then the caller tokenizes the whole document)."""
        ids: list[int] = []
        first_starts = prev_ends = None
        for k, span in enumerate(spans):
            raw = self._span_cache.get(span)
            if raw is None:
                raw = [w.text for w in self.spacy(span)]
                if len(self._span_cache) < 10_000:  # only short-lived, frequent spans such as "xxmaj"
                    self._span_cache[span] = raw
            ends, starts = self._edges(raw[0], raw[-1])
            if k == 0:
                first_starts = starts
            elif self._crosses(prev_ends, starts):
                return None
            ids.extend(self._id_of(self._replace_space(w)) for w in raw)
            prev_ends = ends
        return tuple(ids), prev_ends, first_starts, text

    def _lookup(self, key: str, word: bool) -> tuple | None:
        entry = self._cache.get(key)
        if entry is None and key not in self._cache:
            if word:  # fastai's replace_all_caps and replace_maj on this word alone, then lower()
                text = key
                for rule in self._word_rules:
                    text = rule(text)
                text = text.lower()
                entry = self._entry(self._spans(text), text)
            else:
                entry = self._entry([key], key)
            if len(self._cache) < self.max_cache:
                self._cache[key] = entry
        return entry

    def _whole(self, text: str) -> list[int]:
        """spaCy on the whole processed text: the always-correct path."""
        self.n_whole += 1
        return [self._id_of(self._replace_space(w.text)) for w in self.spacy(text)]

    def _fill(self, words: list[str]) -> None:
        """Cache entries for `words` (raw, uncached) from one spaCy call per few thousand words."""
        rules = self._word_rules
        for lo in range(0, len(words), 4096):
            chunk, procs, seps = words[lo:lo + 4096], [], []
            pos = 0
            for w in chunk:
                t = w
                for rule in rules:
                    t = rule(t)
                t = t.lower()
                head, _, rest = t.partition(" ")
                if rest and (head not in self._markers or " " in rest):
                    procs.append(None)  # not "word" or "marker word": leave it to _lookup
                    continue
                procs.append(t)
                pos += len(t)
                seps.append(pos)
                pos += 1
            joined = "\n".join(p for p in procs if p is not None)
            groups: list[list[str]] = [[]]
            k = 0
            for tok in self.spacy(joined):
                if k < len(seps) and tok.idx == seps[k]:  # the "\n" after word k
                    k += 1
                    groups.append([])
                else:
                    groups[-1].append(tok.text)
            it = iter(groups)
            for w, proc in zip(chunk, procs):
                if proc is None:
                    continue
                raw = next(it)
                ends, starts = self._edges(raw[0], raw[-1])
                if len(self._cache) < self.max_cache:
                    self._cache[w] = (tuple(self._id_of(self._replace_space(x)) for x in raw), ends, starts, proc)

    def _ids_batch(self, texts: list[str]) -> Iterator[list[int]]:
        prepped = []
        missing: dict[str, None] = {}
        cache = self._cache
        for text in texts:
            text = apply_rules(str(text), self._text_rules).strip()  # lowercase() strips the ends anyway
            runs = _RUNS.findall(text)  # word, whitespace, word, ... (stripped: starts with a word)
            prepped.append((text, runs))
            for w in runs[::2]:
                if w not in cache:
                    missing[w] = None
        if missing and self._batch_fill:
            self._fill(list(missing))
        for text, runs in prepped:
            yield self._ids_runs(text, runs)

    # --- tokenizing -------------------------------------------------------------------------------------
    def _ids_runs(self, text: str, runs: list[str]) -> list[int]:
        """Ids of one document from its runs (words at even, whitespace at odd positions).

        Where a special-case pattern could span a boundary between two spans, the spans on both sides
        (a "segment": spans joined by such boundaries) are tokenized by spaCy as one text. Boundaries no
        pattern can cross split the document into independent pieces, so the result is exact. Whether a
        boundary is crossable depends only on the cached entries, so each segment is tokenized once.
        """
        cache, lookup, crosses = self._cache, self._lookup, self._crosses
        out = list(self._bos)
        prev_ends = None
        last_run = last_out = 0  # where the previous span starts: its run, and its first id in `out`
        seg_run = seg_out = -1  # the same for the open segment (-1: none)
        for i, run in enumerate(runs):
            if i & 1:  # whitespace
                if run == " ":
                    continue  # the one separating space belongs to no token
                key = run[1:] if run[0] == " " else run
                entry = cache.get(key) or lookup(key, False)
            else:
                entry = cache.get(run) or lookup(run, True)
                if entry is None:
                    return self._whole(apply_rules(text, self.rules[-3:]))
            ids, ends, starts, _ = entry
            n = len(out)
            if prev_ends is not None and starts is not None and crosses(prev_ends, starts):
                if seg_run < 0:  # open a segment at the previous span
                    seg_run, seg_out = last_run, last_out
            elif seg_run >= 0:  # close the open segment, which ended with the previous span
                del out[seg_out:]
                out.extend(self._segment(runs, seg_run, last_run))
                seg_run = -1
                n = len(out)
            out.extend(ids)
            prev_ends = ends
            last_run, last_out = i, n
        if seg_run >= 0:
            del out[seg_out:]
            out.extend(self._segment(runs, seg_run, last_run))
        return out

    def _segment(self, runs: list[str], a: int, b: int) -> list[int]:
        """Ids of runs[a..b] (processed) tokenized by spaCy as one text."""
        self.n_fallback += 1
        parts = []
        for k in range(a, b + 1):
            run = runs[k]
            if k & 1:
                parts.append(run[1:] if k == a and run[0] == " " else run)
            else:
                parts.append(self._cache[run][3] if self._cache.get(run) else self._lookup(run, True)[3])
        return [self._id_of(self._replace_space(w.text)) for w in self.spacy("".join(parts))]

    def _ids_plain(self, text: str) -> list[int]:
        text = apply_rules(text, self.rules)
        out: list[int] = []
        prev_ends = None
        for span in self._spans(text):
            entry = self._cache.get(span) or self._lookup(span, False)
            ids, ends, starts, _ = entry
            if self._crosses(prev_ends, starts):
                return self._whole(text)
            out.extend(ids)
            prev_ends = ends
        return out

    def ids(self, texts: Iterable[str], batch: int = 64) -> Iterator[list[int]]:
        """Each text's tokens as indices into `self.strings`."""
        if not self._word_path:
            for text in texts:
                yield self._ids_plain(str(text))
            return
        group: list[str] = []
        for text in texts:
            group.append(text)
            if len(group) == batch:
                yield from self._ids_batch(group)
                group = []
        if group:
            yield from self._ids_batch(group)

    def __call__(self, texts: Iterable[str]) -> Iterator[list[str]]:
        strings = self.strings
        for ids in self.ids(texts):
            yield [strings[i] for i in ids]

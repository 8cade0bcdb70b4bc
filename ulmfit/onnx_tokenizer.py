"""Text -> tokens for an exported classifier, without fastai (and so without torch).

`ulmfit.tokenize` calls fastai's own text rules, and importing fastai imports torch. An exported classifier must run
where neither is installed, so the rules are copied here from fastai 2.8 (`fastai.text.core`, the functions of
`defaults.text_proc_rules` and `replace_space`), unchanged. Tokens then come from spaCy on the whole processed text
("rules") or from the bundle's sentencepiece model, which is what `ulmfit.tokenize` yields too (its "rules" cache
is a speed-up that gives spaCy's whole-text tokens). Two checks keep the copy honest: the tests compare each rule
with fastai's on tricky texts, and `ulmfit export` compares this tokenizer's tokens with the bundle's on its parity
texts before it writes anything.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ulmfit.tokenize.spec import BOS, SPECIAL_TOKENS, TK_MAJ, TK_REP, TK_UP, TK_WREP, UNK
from ulmfit.tokenize.tokenizer import TextTokenizer

# ---- fastai.text.core's rules, in the order of defaults.text_proc_rules ----------------------------------

_re_spec = re.compile(r"([/#\\])")
_re_space = re.compile(" {2,}")
_re_rep = re.compile(r"(\S)(\1{2,})")
_re_wrep = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
_re_all_caps = re.compile(r"(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))")
_re_maj = re.compile(r"(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))")


def fix_html(x: str) -> str:
    x = x.replace("#39;", "'").replace("amp;", "&").replace("#146;", "'").replace("nbsp;", " ").replace(
        "#36;", "$").replace("\\n", "\n").replace("quot;", "'").replace("<br />", "\n").replace(
        '\\"', '"').replace("<unk>", UNK).replace(" @.@ ", ".").replace(" @-@ ", "-").replace("...", " …")
    return html.unescape(x)


def replace_rep(t: str) -> str:
    def _sub(m):
        c, cc = m.groups()
        return f" {TK_REP} {len(cc) + 1} {c} "
    return _re_rep.sub(_sub, t)


def replace_wrep(t: str) -> str:
    def _sub(m):
        c, cc, e = m.groups()
        return f" {TK_WREP} {len(cc.split()) + 2} {c} {e}"
    return _re_wrep.sub(_sub, t)


def spec_add_spaces(t: str) -> str:
    return _re_spec.sub(r" \1 ", t)


def rm_useless_spaces(t: str) -> str:
    return _re_space.sub(" ", t)


def replace_all_caps(t: str) -> str:
    def _sub(m):
        tok = f"{TK_UP} " if len(m.groups()[1]) > 1 else ""
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"
    return _re_all_caps.sub(_sub, t)


def replace_maj(t: str) -> str:
    def _sub(m):
        tok = f"{TK_MAJ} " if len(m.groups()[1]) > 1 else ""
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"
    return _re_maj.sub(_sub, t)


def lowercase(t: str) -> str:
    return f"{BOS} " + t.lower().strip()


def replace_space(t: str) -> str:
    return t.replace(" ", "\u2581")


RULES = (fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces, replace_all_caps, replace_maj,
         lowercase)


def apply_rules(text: str) -> str:
    for rule in RULES:
        text = rule(text)
    return text


# ---- the tokenizer -------------------------------------------------------------------------------------------


class PortableTokenizer:
    """`TextTokenizer.tokenize` of a saved tokenizer/ folder, without fastai."""

    def __init__(self, saved: TextTokenizer) -> None:
        self.spec = saved.spec
        if self.spec.kind == "rules":
            import spacy
            from spacy.symbols import ORTH

            nlp = spacy.blank(self.spec.lang)
            for tok in SPECIAL_TOKENS:
                nlp.tokenizer.add_special_case(tok, [{ORTH: tok}])
            nlp.vocab.lex_attr_getters = {}  # as ulmfit.tokenize.rules: they never change the split, and cost time
            self._spacy = nlp.tokenizer
        else:
            import sentencepiece as spm

            from ulmfit.tokenize.sp import WORD_START

            self._sp = spm.SentencePieceProcessor(model_proto=saved.sp_model)
            self._specials = {WORD_START + t: t for t in SPECIAL_TOKENS}

    @classmethod
    def load(cls, directory: Path) -> PortableTokenizer:
        return cls(TextTokenizer.load(directory))  # reads and checks tokenizer.json (+ spm.model); no fastai

    def tokenize(self, texts: Iterable[str]) -> Iterator[list[str]]:
        """Token lists, one per text, each starting with xxbos."""
        if self.spec.kind == "rules":
            for text in texts:
                yield [replace_space(w.text) for w in self._spacy(apply_rules(str(text)))]
        else:
            for text in texts:
                pieces = self._sp.encode(apply_rules(str(text)), out_type=str)
                yield [self._specials.get(p, p) for p in pieces]

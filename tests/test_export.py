"""`ulmfit export --format onnx` and `OnnxClassifier`: outputs equal to torch's, no torch or fastai at run time,
`predict` on an export folder, the output folder's safety rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_predict import WORDS, make_texts
from test_predict import make_bundle as predict_bundle

from ulmfit.classify import Classifier
from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError
from ulmfit.export import export_classifier, parity_texts
from ulmfit.onnx_runtime import MANIFEST, OnnxClassifier

AWD = dict(emb_sz=16, n_hid=24, n_layers=2)
QRNN = dict(name="qrnn", emb_sz=16, n_hid=24, n_layers=3)


def make_bundle(path: Path, arch=AWD, labels=("neg", "pos", "meh"), **kw) -> Path:
    """`test_predict.make_bundle` with three labels by default (argmax ties would hide a column mix-up)."""
    return predict_bundle(path, arch=arch, labels=labels, **kw)


def texts_to_check() -> list[str]:
    """Varied lengths (the tiny preset reads 16-token chunks and pools the last 320 tokens), an empty text,
    and capitals/punctuation for the tokenizer rules."""
    long = " ".join(np.random.default_rng(9).choice(WORDS, size=500))
    return make_texts(25, seed=7) + [long, "", "GOOD film!!! Not BAD at all... 10/10"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("clf") / "model", temperature=1.7, ngram_weight=0.3)


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", str(bundle), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_export_writes_a_checked_self_describing_folder(exported) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {MANIFEST, "encoder.onnx", "head.onnx", "vocab.json", "tokenizer", "ngram.json",
            "ngram.safetensors"} <= names
    assert not [n for n in names if n.startswith(".")]  # no staging leftovers
    manifest = json.loads((exported / MANIFEST).read_text())
    assert manifest["temperature"] == 1.7 and manifest["ngram_weight"] == 0.3
    assert manifest["parity"]["texts"] == len(parity_texts(16, 320))
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    assert manifest["encoder"]["arch"] == "awd_lstm"


def test_onnx_outputs_equal_torch_with_temperature_and_ngram(bundle, exported) -> None:
    texts = texts_to_check()
    clf, onnx_clf = Classifier.load(bundle, device="cpu"), OnnxClassifier.load(exported)
    want = clf.predict_proba(texts)
    assert np.abs(want - want[::-1]).max() > 0.05  # outputs vary from text to text
    np.testing.assert_allclose(onnx_clf.predict_proba(texts), want, atol=1e-4)
    np.testing.assert_allclose(onnx_clf.predict_proba(texts, bs=3), want, atol=1e-4)  # other batches: same
    assert [r["label"] for r in onnx_clf.predict(texts)] == [r["label"] for r in clf.predict(texts)]
    neural = Classifier.load(bundle, device="cpu", ngram_weight=0).predict_proba(texts)
    np.testing.assert_allclose(OnnxClassifier.load(exported, ngram_weight=0).predict_proba(texts), neural, atol=1e-4)


def test_the_runtime_imports_neither_torch_nor_fastai(bundle, exported, tmp_path) -> None:
    texts = texts_to_check()[:6]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    code = (
        "import json, sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['fastai'] = None\n"
        "from ulmfit.onnx_runtime import OnnxClassifier\n"
        "probs = OnnxClassifier.load(sys.argv[1]).predict_proba(json.loads(sys.argv[2]))\n"
        "print(json.dumps(probs.tolist()))\n"
        "from ulmfit.cli.main import main\n"  # and `ulmfit predict` on the folder, in the same process
        "code = main(['predict', sys.argv[1], '--input', sys.argv[3], '--output', '-'])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai') and sys.modules[m] is not None]\n"
        "assert not loaded, loaded\n"
        "sys.exit(code)\n")
    res = subprocess.run([sys.executable, "-c", code, str(exported), json.dumps(texts), str(src)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    want = Classifier.load(bundle, device="cpu").predict_proba(texts)
    np.testing.assert_allclose(np.array(json.loads(lines[0])), want, atol=1e-4)
    cli = np.array([[r["probs"][lab] for lab in ("neg", "pos", "meh")] for r in map(json.loads, lines[1:])])
    np.testing.assert_allclose(cli, want, atol=1e-4)


def test_predict_cli_takes_an_export_next_to_a_bundle(bundle, exported, tmp_path, capsys) -> None:
    texts = make_texts(7, seed=3)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(exported), str(bundle), "--input", str(src), "--output", str(out)]) == 0
    got = np.array([json.loads(x)["probs"]["pos"] for x in out.read_text().splitlines()])
    np.testing.assert_allclose(got, Classifier.load(bundle, device="cpu").predict_proba(texts)[:, 1], atol=1e-4)
    assert main(["predict", str(exported), "--input", str(src), "--output", str(out), "--int8"]) == 1
    assert "int8" in capsys.readouterr().err


@pytest.mark.parametrize("arch,backwards", [(QRNN, False), (dict(AWD, bidir=True), True)],
                         ids=["qrnn", "bidir-lstm-backward"])
def test_qrnn_and_backward_bidirectional_lstm_export(arch, backwards, tmp_path) -> None:
    b = make_bundle(tmp_path / "clf", arch=arch, backwards=backwards, seed=4)
    res = export_classifier(b, tmp_path / "onnx", log=lambda _: None)
    assert res.arch == arch.get("name", "awd_lstm") and res.max_diff <= 1e-4
    texts = texts_to_check()
    np.testing.assert_allclose(OnnxClassifier.load(res.out).predict_proba(texts),
                               Classifier.load(b, device="cpu").predict_proba(texts), atol=1e-4)


def test_multi_label_and_regression_export(tmp_path) -> None:
    from ulmfit.classify.task import Task

    texts = texts_to_check()
    for kind, labels in (("multi-label", ("a", "b", "c")), ("regression", ("stars",))):
        task = Task(kind=kind, labels=list(labels), mean=3.0, std=2.0) if kind == "regression" else \
            Task(kind=kind, labels=list(labels))
        b = make_bundle(tmp_path / kind, labels=labels, task=task, seed=6)
        res = export_classifier(b, tmp_path / f"{kind}-onnx", log=lambda _: None)
        clf, onnx_clf = Classifier.load(b, device="cpu"), OnnxClassifier.load(res.out)
        np.testing.assert_allclose(onnx_clf.predict_proba(texts), clf.predict_proba(texts), atol=2e-4)
        decisions = [[{k: v for k, v in r.items() if k != "probs"} for r in c.predict(texts)] for c in (clf, onnx_clf)]
        assert decisions[0] == decisions[1] or kind == "regression"  # a value may differ in its last digits


def test_out_folder_rules(bundle, tmp_path, capsys) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["export", str(bundle), "--out", str(other)]) == 1
    assert "not an ONNX export" in capsys.readouterr().err and (other / "notes.txt").read_text() == "keep me"
    assert main(["export", str(bundle), "--out", str(other), "--overwrite"]) == 0
    assert (other / MANIFEST).is_file() and not (other / "notes.txt").exists()
    assert main(["export", str(bundle), "--out", str(other)]) == 0  # an earlier export is simply replaced
    assert main(["export", str(bundle), "--out", str(bundle), "--overwrite"]) == 1
    assert "holds the bundle" in capsys.readouterr().err and (bundle / "meta.json").is_file()
    assert main(["export", str(bundle), "--out", str(tmp_path / "x"), "--format", "tflite"]) == 1
    assert "unknown export format" in capsys.readouterr().err


def test_a_failed_parity_check_writes_nothing(bundle, tmp_path, monkeypatch) -> None:
    import ulmfit.export

    out = tmp_path / "onnx"
    export_classifier(bundle, out, log=lambda _: None)
    before = (out / MANIFEST).read_text()
    monkeypatch.setattr(ulmfit.export, "TOLERANCE", -1.0)  # nothing passes
    with pytest.raises(UlmfitError, match="differ from torch's"):
        export_classifier(bundle, out, log=lambda _: None)
    with pytest.raises(UlmfitError, match="differ from torch's"):
        export_classifier(bundle, tmp_path / "new", log=lambda _: None)
    assert (out / MANIFEST).read_text() == before and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no staging folder left behind


def test_parity_texts_from_a_file(bundle, tmp_path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a fine film\n\nthe plot was dull\nGREAT acting, awful story\n")
    res = export_classifier(bundle, tmp_path / "onnx", texts_file=texts, log=lambda _: None)
    assert res.texts == 3 and json.loads((res.out / MANIFEST).read_text())["parity"]["texts"] == 3
    texts.write_text("\n\n")
    with pytest.raises(UlmfitError, match="has no texts"):
        export_classifier(bundle, tmp_path / "other", texts_file=texts)


TRICKY = ["Hello WORLD!!! It's  sooooo   GOOD good good good.", "&amp; &#39;quoted&#39; <br /><br />next\\nline",
          "a/b #tag c\\d", "Über-café ÉCOLE naïve", "<unk> @.@ @-@ ... x", "  ", "OK I", "wow:) ) :-) 's"]


def test_the_copied_rules_and_tokenizers_are_fastais(tmp_path) -> None:
    from fastai.text import core as fastai_text

    from ulmfit import onnx_tokenizer as portable
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, train_tokenizer

    for rule in fastai_text.defaults.text_proc_rules + fastai_text.defaults.text_postproc_rules:
        mine = getattr(portable, rule.__name__)
        assert [mine(t) for t in TRICKY] == [rule(t) for t in TRICKY], rule.__name__
    assert [r.__name__ for r in portable.RULES] == [r.__name__ for r in fastai_text.defaults.text_proc_rules]
    sp = train_tokenizer(TokenizerSpec(kind="sentencepiece", sp_vocab_size=60), make_texts(60) + TRICKY)
    for tok in (TextTokenizer(TokenizerSpec(kind="rules")), sp):
        tok.save(tmp_path / tok.spec.kind)
        got = list(portable.PortableTokenizer.load(tmp_path / tok.spec.kind).tokenize(TRICKY))
        assert got == list(tok.tokenize(TRICKY)), tok.spec.kind

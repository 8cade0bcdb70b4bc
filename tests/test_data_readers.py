"""Readers: every supported layout and format read into the right texts, labels and splits; bad input gives
one clear line through the CLI."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest

from helpers_data import rows, tar_bytes, tar_folder, write_imdb_tree
from ulmfit.cli.main import main
from ulmfit.data import load_corpus
from ulmfit.data.limits import ArchiveLimits, format_size, parse_size
from ulmfit.data.readers import read_source
from ulmfit.data.tables import column_preview
from ulmfit.errors import UlmfitError


def test_imdb_folder_keeps_splits_and_ignores_non_documents(tmp_path: Path) -> None:
    root = write_imdb_tree(tmp_path / "aclImdb", n_train=4, n_test=3, n_unsup=2)
    c = load_corpus(root, valid_pct=0)
    assert c.summary() == {
        "train": {"documents": 8, "labels": {"neg": 4, "pos": 4}},
        "test": {"documents": 6, "labels": {"neg": 3, "pos": 3}},
        "unsup": {"documents": 2, "labels": {}},
    }
    assert all(y is None for y in c.select("unsup").labels)
    # Natural file-name order (0_2, 5_2, 10_2, 15_2), the order the reviews were written in.
    assert [t for t, y in rows(c, "train") if y == "neg"] == [f"train neg review number {i}" for i in range(4)]
    assert not any("http://" in t or "Large Movie" in t for t in c.texts)
    assert c.name == "aclImdb"


def test_tarball_reads_like_the_folder(tmp_path: Path) -> None:
    root = write_imdb_tree(tmp_path / "aclImdb")
    tgz = tar_folder(root, tmp_path / "aclImdb_v1.tar.gz")
    a, b = load_corpus(root, valid_pct=0), load_corpus(tgz, valid_pct=0)
    assert (a.texts, a.labels, a.splits) == (b.texts, b.labels, b.splits)
    assert a.fingerprint == b.fingerprint
    assert b.name == "aclImdb_v1.tar.gz"


def test_tarball_holding_one_csv(tmp_path: Path) -> None:
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "texts.csv").write_text("label,text,is_valid\npos,nice,False\nneg,bad,True\n")
    c = load_corpus(tar_folder(tmp_path / "sample", tmp_path / "sample.tgz"))
    assert list(zip(c.texts, c.labels, c.splits)) == [("nice", "pos", "train"), ("bad", "neg", "valid")]


def test_a_folder_holding_the_dataset_folder_is_read_through(tmp_path: Path) -> None:
    write_imdb_tree(tmp_path / "cache" / "aclImdb")
    assert load_corpus(tmp_path / "cache", valid_pct=0).summary()["test"]["documents"] == 6


def test_label_folders_without_splits_are_train(tmp_path: Path) -> None:
    for label, n in (("spam", 4), ("ham", 16)):
        (tmp_path / label).mkdir()
        for i in range(n):
            (tmp_path / label / f"{i}.txt").write_text(f"{label} message {i}")
    c = load_corpus(tmp_path, valid_pct=0)
    assert set(c.splits) == {"train"}
    assert c.summary()["train"]["labels"] == {"ham": 16, "spam": 4}
    carved = load_corpus(tmp_path, valid_pct=0.25, seed=1)
    assert carved.summary()["valid"] == {"documents": 5, "labels": {"ham": 4, "spam": 1}}  # 25% of 20, stratified


def test_line_files_one_example_per_line(tmp_path: Path) -> None:
    (tmp_path / "pos.txt").write_text("good film\ngreat acting\nloved it\n")
    (tmp_path / "neg.txt").write_text("boring\nawful plot\n")
    c = load_corpus(tmp_path, valid_pct=0)
    assert rows(c, "train") == [("boring", "neg"), ("awful plot", "neg"), ("good film", "pos"),
                                ("great acting", "pos"), ("loved it", "pos")]


def test_line_files_in_split_folders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "pos.txt").write_text(f"{split} good\n{split} nice\n")
        (tmp_path / split / "neg.txt").write_text(f"{split} bad\n")
    c = load_corpus(tmp_path, valid_pct=0)
    assert c.summary()["test"] == {"documents": 3, "labels": {"neg": 1, "pos": 2}}
    assert ("test bad", "neg") in rows(c, "test")


def test_csv_with_fastai_is_valid_column(tmp_path: Path) -> None:
    p = tmp_path / "texts.csv"
    p.write_text('label,text,is_valid\nnegative,"bad, really ""bad""",False\npositive,good,True\n'
                 'positive,"multi\nline",False\n')
    c = load_corpus(p)
    assert rows(c, "train") == [('bad, really "bad"', "negative"), ("multi\nline", "positive")]
    assert rows(c, "valid") == [("good", "positive")]  # the source's valid: nothing carved
    assert c.name == "texts.csv"


def test_tsv_with_split_column_and_default_column_names(tmp_path: Path) -> None:
    p = tmp_path / "data.tsv"
    p.write_text("Review\tSentiment\tsplit\nfine\tpos\ttrain\nmeh\tneg\tdev\nok\tpos\ttest\nhmm\t\tunsup\n"
                 "what\tneg\ttrain\n")
    c = load_corpus(p)
    assert rows(c, "valid") == [("meh", "neg")]  # dev means valid
    assert rows(c, "test") == [("ok", "pos")]
    assert rows(c, "unsup") == [("hmm", None)]
    assert rows(c, "train") == [("fine", "pos"), ("what", "neg")]


def test_several_text_columns_are_joined_with_a_blank_line(tmp_path: Path) -> None:
    p = tmp_path / "news.csv"
    p.write_text("class,title,body\n1,Stocks up,Markets rallied.\n2,,Only a body\n")
    c = load_corpus(p, text_col="title,body", valid_pct=0)
    assert c.texts == ["Stocks up\n\nMarkets rallied.", "Only a body"]
    assert c.labels == ["1", "2"]  # "class" found as the label column


def test_jsonl_unlabeled_rows_and_explicit_columns(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    recs = [{"body": "one", "y": 0}, {"body": "two", "y": None}, {"body": "three", "y": 1}]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    c = load_corpus(p, text_col="body", label_col="y", valid_pct=0)
    assert list(zip(c.texts, c.labels)) == [("one", "0"), ("two", None), ("three", "1")]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"sentence": ["a b", "c d", "e f"], "target": [1.0, None, 0.0],
                             "split": ["train", "train", "test"]}), p)
    c = load_corpus(p, valid_pct=0)
    assert list(zip(c.texts, c.labels, c.splits)) == [("a b", "1", "train"), ("c d", None, "train"),
                                                      ("e f", "0", "test")]


def test_table_files_named_after_splits(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "test.csv").write_text("text,label\nc,x\n")
    c = load_corpus(tmp_path, valid_pct=0)
    assert rows(c, "test") == [("c", "x")] and len(c.select("train")) == 2


@pytest.mark.parametrize("doc_sep,expected", [
    ("line", ["First para line one.", "line two.", "Second para."]),
    ("paragraph", ["First para line one.\nline two.", "Second para."]),
    ("auto", ["First para line one.\nline two.", "Second para."]),
])
def test_plain_text_documents(tmp_path: Path, doc_sep: str, expected: list[str]) -> None:
    p = tmp_path / "wiki.txt"
    p.write_text("First para line one.\nline two.\n\n  \nSecond para.\n")
    c = load_corpus(p, doc_sep=doc_sep, valid_pct=0)
    assert c.texts == expected and set(c.labels) == {None}


def test_plain_text_auto_is_lines_without_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "lines.txt"
    p.write_text("one doc\ntwo doc\nthree doc\n")
    assert load_corpus(p, valid_pct=0).texts == ["one doc", "two doc", "three doc"]


def test_empty_texts_are_dropped_with_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,label\nkept,a\n   ,b\n,a\nalso kept,b\n")
    c = load_corpus(p, valid_pct=0)
    assert c.texts == ["kept", "also kept"]
    assert "dropped 2 empty document(s)" in capsys.readouterr().err


def test_undecodable_bytes_are_replaced_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pos").mkdir()
    (tmp_path / "neg").mkdir()
    (tmp_path / "pos" / "1.txt").write_bytes(b"caf\xe9 was great")  # latin-1, not UTF-8
    (tmp_path / "pos" / "2.txt").write_bytes("naïve but fine".encode())
    (tmp_path / "neg" / "1.txt").write_bytes(b"\xff\xfe bad \xe9")
    c = load_corpus(tmp_path, valid_pct=0)
    assert "caf\ufffd was great" in c.texts and "naïve but fine" in c.texts
    assert "2 document(s) had bytes that are not UTF-8" in capsys.readouterr().err


def test_bom_is_dropped(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufefftext,label\nhello,a\n".encode())
    assert load_corpus(p, valid_pct=0).texts == ["hello"]


# ---------------------------------------------------------------------------------------------- errors

def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["data", "info", str(tmp_path / "nope.csv")], capsys)
    assert "no such file or folder" in err and "nope.csv" in err


def test_unknown_dataset_name_lists_registered(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["data", "info", "imbd"], capsys)
    assert "unknown dataset 'imbd'" in err and "imdb, imdb-sample" in err


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "e.csv").write_text("")
    assert "e.csv is empty" in _fails(["data", "info", str(tmp_path / "e.csv")], capsys)
    (tmp_path / "e.txt").write_text("\n\n")
    assert "e.txt is empty" in _fails(["data", "info", str(tmp_path / "e.txt")], capsys)
    (tmp_path / "d").mkdir()
    assert "is empty" in _fails(["data", "info", str(tmp_path / "d")], capsys)


def test_unknown_column_lists_available(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "t.csv"
    p.write_text("body,stars\nhello,5\n")
    err = _fails(["data", "info", str(p)], capsys)
    assert "no text column" in err and "available: body, stars" in err and "--text-col" in err
    err = _fails(["data", "info", str(p), "--text-col", "body", "--label-col", "rating"], capsys)
    assert "unknown label column 'rating'" in err and "available: body, stars" in err
    err = _fails(["data", "info", str(p), "--text-col", "body,title"], capsys)
    assert "unknown text column 'title'" in err


def test_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "data.xlsx"
    p.write_bytes(b"PK\x03\x04")
    assert "unknown format of data.xlsx" in _fails(["data", "info", str(p)], capsys)
    assert "unknown format 'excel'" in _fails(["data", "info", str(p), "--fmt", "excel"], capsys)


def test_all_texts_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,label\n ,a\n,b\n")
    assert "all 2 documents are empty" in _fails(["data", "info", str(p)], capsys)


def test_bad_split_value_and_bad_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,label,split\na,x,train\nb,y,holdout\n")
    assert "row 2: split value 'holdout'" in _fails(["data", "info", str(p)], capsys)
    j = tmp_path / "t.jsonl"
    j.write_text('{"text": "a"}\n{"text": \n')
    assert "line 2 is not valid JSON" in _fails(["data", "info", str(j)], capsys)


def test_options_that_do_not_apply_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_imdb_tree(tmp_path / "aclImdb")
    err = _fails(["data", "info", str(root), "--text-col", "review"], capsys)
    assert "--text-col/--label-col apply to table files" in err and "<split>/<label>/*.txt" in err
    (tmp_path / "t.csv").write_text("text,label\na,b\n")
    assert "--doc-sep applies to plain text files" in _fails(
        ["data", "info", str(tmp_path / "t.csv"), "--doc-sep", "line"], capsys)


def test_damaged_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "broken.tar.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    assert "cannot read archive broken.tar.gz" in _fails(["data", "info", str(p)], capsys)


def test_bad_valid_pct_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a\nb\n")
    with pytest.raises(UlmfitError, match="valid_pct"):
        load_corpus(tmp_path / "t.txt", valid_pct=1.5)


# ---------------------------------------------------------------------------------------------- info

def test_info_reports_splits_classes_and_lengths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_imdb_tree(tmp_path / "aclImdb", n_train=4, n_test=3, n_unsup=2)
    (root / "train" / "pos" / "99_9.txt").write_text(" ".join(["word"] * 40))  # the longest document
    assert main(["data", "info", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    train = info["splits"]["train"]
    assert train["documents"] == 9 and train["labels"] == {"neg": 4, "pos": 5} and train["unlabeled"] == 0
    assert train["tokens"]["min"] == 5 and train["tokens"]["max"] == 40 and train["tokens"]["median"] == 5
    assert info["splits"]["unsup"]["unlabeled"] == 2
    assert "valid" not in info["splits"]  # info shows the source's own splits
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:4]}
    assert lines["split"][:4] == ["split", "documents", "neg", "pos"]
    assert lines["train"][:4] == ["train", "9", "4", "5"] and lines["test"][:4] == ["test", "6", "3", "3"]


# ---------------------------------------------------------------------------------------------- limits

def _tgz(path: Path, files: dict[str, bytes]) -> Path:
    path.write_bytes(tar_bytes(files))
    return path


@pytest.mark.parametrize("env, value, message", [
    ("ULMFIT_MAX_ARCHIVE_MEMBERS", "10", "refusing many.tar.gz: it has more than 10 members"),
    ("ULMFIT_MAX_ARCHIVE_BYTES", "1K", "refusing many.tar.gz: it unpacks to more than 1 KiB"),
])
def test_an_archive_over_a_limit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], env: str, value: str,
                                             message: str) -> None:
    files = {f"docs/pos/{i}.txt": b"a fine review " * 10 for i in range(20)}  # 20 members, 2,800 bytes
    p = _tgz(tmp_path / "many.tar.gz", files)
    monkeypatch.setenv(env, value)
    err = _fails(["data", "info", str(p)], capsys).splitlines()
    assert err[0] == f"error: {message}" and len(err) == 2
    assert err[1].startswith(f"hint: if you trust the archive, raise the limit, e.g. {env}=")
    monkeypatch.delenv(env)
    assert load_corpus(p, valid_pct=0).summary()["train"]["documents"] == 20


def test_a_gzip_bomb_is_refused_while_it_streams(tmp_path: Path) -> None:
    # 64 MiB of zeros compresses to ~64 KiB: refused after the first MiB block past the limit, never held whole.
    p = tmp_path / "bomb.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        info = tarfile.TarInfo("docs/pos/big.txt")
        info.size = 64 << 20
        tar.addfile(info, _Zeros(info.size))
    assert p.stat().st_size < 1 << 20
    with pytest.raises(UlmfitError, match="refusing bomb.tar.gz: it unpacks to more than 2 MiB"):
        read_source(p, limits=ArchiveLimits(max_bytes=2 << 20))


def test_skipped_members_count_towards_the_limits(tmp_path: Path) -> None:
    # Members that are not documents (a README, a binary) still cost decompression: they count too.
    p = _tgz(tmp_path / "x.tgz", {"README": b"r" * 5000, "docs/pos/1.txt": b"ok", "docs/neg/1.txt": b"no"})
    with pytest.raises(UlmfitError, match="unpacks to more than 4 KiB"):
        read_source(p, limits=ArchiveLimits(max_bytes=4 << 10))
    with pytest.raises(UlmfitError, match="more than 2 members"):
        read_source(p, limits=ArchiveLimits(max_members=2))
    assert read_source(p, limits=ArchiveLimits(max_members=3, max_bytes=5004)).texts == ["no", "ok"]


def test_limit_settings() -> None:
    assert ArchiveLimits() == ArchiveLimits(max_members=1_000_000, max_bytes=4 << 30)
    assert [parse_size(v, "X") for v in ("4G", "512m", "100", " 2KiB ", "3MB")] == [4 << 30, 512 << 20, 100, 2048,
                                                                                   3 << 20]
    for bad in ("0", "-1", "1.5G", "lots", ""):
        with pytest.raises(UlmfitError, match="X must be a positive number of bytes"):
            parse_size(bad, "X")
    assert [format_size(n) for n in (4 << 30, 1000, 1536)] == ["4 GiB", "1,000 bytes", "1,536 bytes"]


def test_a_bad_member_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULMFIT_MAX_ARCHIVE_MEMBERS", "1e6")
    with pytest.raises(UlmfitError, match="ULMFIT_MAX_ARCHIVE_MEMBERS must be a positive whole number, got '1e6'"):
        ArchiveLimits.from_env()


class _Zeros(io.RawIOBase):
    """`n` zero bytes, produced as read: a bomb's payload without holding it in the test either."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


# ---------------------------------------------------------------------------------------------- binary "CSV"

@pytest.mark.parametrize("payload", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,  # an image: NUL bytes
    "text,label\nhello,pos\n".encode("utf-16"),  # UTF-16: NUL bytes too
    bytes(range(0x80, 0x100)) * 8 + b"\n",  # no NUL, but nothing in the header decodes
])
def test_a_binary_file_posing_as_csv_is_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       payload: bytes) -> None:
    p = tmp_path / "data.csv"
    p.write_bytes(payload)
    err = _fails(["data", "info", str(p)], capsys).splitlines()
    assert err[0].startswith("error: data.csv does not look like a CSV text file: ") and len(err) == 2
    assert len(err[0]) < 200 and err[0].isprintable() and "available" not in err[0]
    assert err[1] == "hint: pass a UTF-8 CSV file with a header row, or the right --fmt"


def test_a_latin1_header_is_still_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes("text,catégorie\ntrès bien,pos\n".encode("latin-1"))
    c = load_corpus(p, valid_pct=0)
    assert c.texts == ["tr\ufffds bien"]
    assert "1 document(s) had bytes that are not UTF-8" in capsys.readouterr().err


def test_available_columns_are_a_short_printable_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "wide.csv"
    names = [f"column_{i}_" + "x" * 60 for i in range(30)] + ["bell\x07"]
    with open(p, "w", newline="") as f:
        csv.writer(f).writerows([names, ["v"] * len(names)])
    err = _fails(["data", "info", str(p)], capsys).splitlines()[0]
    assert "(available: column_0_xxx" in err and "... and 21 more)" in err and err.isprintable()
    assert err.count("column_") == 10 and "column_0_" + "x" * 28 + "..." in err and len(err) < 600
    assert column_preview(["bell\x07", "tab\tbed"]) == "bell\\x07, tab\\tbed"
    assert column_preview([]) == "none"

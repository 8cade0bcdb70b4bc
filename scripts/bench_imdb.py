"""IMDb quality study: ULMFiT on a CPU budget against the baselines, on one fixed evaluation set.

    ULMFIT_MIRROR=../shared/data python scripts/bench_imdb.py tfidf --labels 100 1000 25000
    ULMFIT_MIRROR=../shared/data python scripts/bench_imdb.py ulmfit --labels 1000 100 --lm-docs 9000
    ULMFIT_MIRROR=../shared/data python scripts/bench_imdb.py fastai --labels 1000 --lm-docs 9000

Everything reads IMDb through the project's own registry. The evaluation set is a stratified, seeded
sample of the official test split (`--test-size`, default 5,000; 0 = all 25,000). Labeled training sets are
balanced, seeded samples of the official train split. Language models see `train/unsup` plus train texts,
never test texts. Each configuration appends one JSON line (config, accuracy, wall time, command) to
`--out` (default runs/bench_imdb.jsonl), which BENCHMARKS.md quotes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from ulmfit._io import read_json
from ulmfit.data import Corpus, load_corpus, subsample


def imdb_splits(test_size: int, n_labels: int, seed: int) -> tuple[Corpus, Corpus, Corpus]:
    """(labeled train sample, test sample, LM corpus = unsup + all train texts without labels)."""
    imdb = load_corpus("imdb", valid_pct=0)
    test = imdb.select("test")
    if test_size:  # the evaluation set is fixed (seed 0) whatever --seed says, so seeds compare on one set
        test = subsample(test, "test", test_size, seed=0)
    train = subsample(imdb.select("train"), "train", n_labels, seed=seed)
    lm = imdb.select(["train", "unsup"])
    return train, test, lm


def run_tfidf(train: Corpus, test: Corpus, seed: int) -> dict:
    """TF-IDF (uni+bigram) + logistic regression; C chosen by 5-fold cross-validation on the labeled set
    (no extra labels are used to tune it)."""
    grid, vec = fit_tfidf(train, seed)
    acc = float((grid.predict(vec.transform(test.texts)) == test.labels).mean())
    return {"accuracy": acc, "C": grid.best_params_["C"]}


def fit_tfidf(train: Corpus, seed: int):
    """The TF-IDF baseline's model: (fitted GridSearchCV, fitted vectorizer)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.9, sublinear_tf=True, strip_accents="unicode")
    x_train = vec.fit_transform(train.texts)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    grid = GridSearchCV(LogisticRegression(max_iter=2000), {"C": [0.3, 1, 3, 10, 30, 100]}, cv=cv, n_jobs=1)
    grid.fit(x_train, train.labels)
    return grid, vec


def tfidf_hybrid(args: argparse.Namespace, train: Corpus, test: Corpus, bundles: list[Path]) -> dict:
    """A hybrid, not ULMFiT: the mean of the classifier's test probabilities and the TF-IDF baseline's (fitted
    on the same n labels, as the tfidf row), to see whether the two models' errors differ enough to combine."""
    import numpy as np

    from ulmfit.classify import Classifier

    grid, vec = fit_tfidf(train, args.seed)
    p_tfidf = grid.predict_proba(vec.transform(test.texts))
    classes = [str(c) for c in grid.classes_]
    y = np.array(test.labels)
    out = {"tfidf_accuracy": float((np.array(classes)[p_tfidf.argmax(1)] == y).mean())}
    for i, path in enumerate(bundles):
        clf = Classifier.load(path)
        p = clf.predict_proba(test.texts)[:, [clf.labels.index(c) for c in classes]]
        np.save(Path(path).parent / "test_probs.npy", p)  # for offline combinations; rows = the test sample
        key = "tfidf_hybrid_accuracy" if i == 0 else "tfidf_hybrid_self_accuracy"
        out[key] = float((np.array(classes)[(p + p_tfidf).argmax(1)] == y).mean())
    return out


def labeled_corpus(train: Corpus, test: Corpus, seed: int) -> Corpus:
    """The n labeled reviews (10% of them held out as the classifier's validation split) + the test sample.
    Model selection only ever sees the n labels."""
    from ulmfit.data.splits import carve_splits

    splits = carve_splits(train.labels, ["train"] * len(train), 0.1, seed)
    return Corpus(train.texts + test.texts, train.labels + test.labels, splits + ["test"] * len(test),
                  f"imdb-{len(train)}")


def lm_corpus(lm: Corpus, seed: int) -> Corpus:
    """Unlabeled view of train + unsup texts for the LM, 2% held out to measure perplexity (no test text)."""
    from ulmfit.data.splits import carve_splits

    splits = carve_splits([None] * len(lm), ["train"] * len(lm), 0.02, seed)
    return Corpus(lm.texts, [None] * len(lm), splits, "imdb-lm")


def run_ulmfit(args: argparse.Namespace, train: Corpus, test: Corpus, lm: Corpus, scratch: bool) -> dict:
    """The project's pipeline: LM pretraining on unlabeled IMDb (unless --lm names a bundle to reuse), then the
    classifier with gradual unfreezing; or the same classifier --from-scratch."""
    from ulmfit.classify import evaluate
    from ulmfit.classify.config import resolve_config as clas_config
    from ulmfit.classify.train import train_classifier
    from ulmfit.lm import finetune, pretrain, resolve_config

    name = f"{'scratch' if scratch else 'ulmfit'}-{len(train)}-s{args.seed}" + ("-bwd" if args.backwards else "")
    out = args.work / name
    result: dict = {}
    lm_dir = args.lm
    if not scratch and lm_dir is None:
        t = time.perf_counter()
        sets = list(args.lm_set or [])
        cfg = resolve_config(args.preset, sets=sets)
        res = pretrain(lm_corpus(lm, args.seed), out / "lm", cfg, seed=args.seed, preset=args.preset,
                       max_docs=args.lm_docs or None, backwards=args.backwards)
        lm_dir = res.best
        result.update(lm_perplexity=res.final.get("perplexity"), lm_accuracy=res.final.get("accuracy"),
                      lm_wall_s=round(time.perf_counter() - t, 1))
        args.lm = lm_dir  # the next label count reuses this LM (its time is reported once, with this row)
        if args.lm_only:
            return result
    t = time.perf_counter()
    ccfg = clas_config(args.preset, sets=list(args.clas_set or []), epochs=args.clas_epochs,
                       overrides={"from_scratch": scratch, "backwards": args.backwards,
                                  # --seed 0 keeps the classifier's default seed (42), as the recorded rows did
                                  "seed": 42 + args.seed})
    data = labeled_corpus(train, test, args.seed)
    if args.lm_finetune and not scratch:  # ULMFiT's stage 2 on the task's own texts (never the test sample)
        ft_cfg = resolve_config(args.preset, sets=[f"epochs={args.lm_finetune}"])
        ft = finetune(data, lm_dir, out / "lm-ft", ft_cfg, seed=args.seed, preset=args.preset,
                      backwards=args.backwards)
        lm_dir = ft.best
        result.update(lm_ft_perplexity=ft.final.get("perplexity"), lm_ft_wall_s=round(time.perf_counter() - t, 1))
    if args.self_train and not scratch:  # the library's self-training: OUT/clas-self/teacher is the plain classifier
        ccfg = dataclasses.replace(ccfg, self_train=args.self_train, self_train_keep=args.self_train_keep)
        clas = train_classifier(data, lm=lm_dir, out=out / "clas-self", config=ccfg, unlabeled=lm.select("unsup"))
        bundles = [clas.out / "teacher" / "model-best", clas.best]
        st = read_json(clas.best / "meta.json")["self_train"]
        result.update(self_train_docs=st["labelled_by_teacher"], self_train_kept=st["kept"],
                      self_train_min_conf=st["min_confidence"],
                      **accuracies(evaluate([clas.best], data, split="test"), "self_train_"))
    else:
        clas = train_classifier(data, lm=None if scratch else lm_dir, out=out / "clas", config=ccfg)
        bundles = [clas.best]
    result.update(accuracies(evaluate(bundles[:1], data, split="test")),
                  clas_wall_s=round(time.perf_counter() - t, 1), lm=str(lm_dir) if lm_dir else None)
    if args.with_tfidf:
        result.update(tfidf_hybrid(args, train, test, bundles))
    if args.ensemble:  # mean of probabilities with a classifier trained the other way (paper: fwd + bwd)
        result["ensemble_accuracy"] = evaluate([clas.best, args.ensemble], data, split="test").headline["accuracy"]
    return result


def accuracies(report, prefix: str = "") -> dict:
    """`accuracy`: what `predict` outputs (the neural model mixed with the bundle's n-gram model); `neural_accuracy`
    and `ngram_accuracy`: each part alone, when the bundle has an n-gram model (rows before 2026-12-01 had none)."""
    shipped = report.headline
    parts = shipped.get("parts") or {}
    out = {f"{prefix}accuracy": shipped["accuracy"]}
    out.update({f"{prefix}{k}_accuracy": v["accuracy"] for k, v in parts.items()})
    if "ngram_weight" in shipped:
        out[f"{prefix}ngram_weight"] = shipped["ngram_weight"]
    return out


def run_fastai(args: argparse.Namespace, train: Corpus, test: Corpus, lm: Corpus) -> dict:
    """fastai's own ULMFiT recipe, written as its text tutorial writes it, on the same data and budget.

    LM: `TextDataLoaders.from_df(is_lm=True)` (fastai's spaCy tokenizer and rules, its default vocabulary:
    60,000 words seen at least 3 times), `language_model_learner(AWD_LSTM, pretrained=False, drop_mult=0.3)`,
    `fit_one_cycle(epochs, 2e-2)`, on the same `--lm-docs` reviews and validation split as ours. Model sizes
    come from the preset (`--lm-set emb_sz=... n_hid=... n_layers=...` apply), so both sides train the same
    LSTM body on the same reviews (fastai's bigger default vocabulary makes its softmax dearer: that is part of
    its recipe). Classifier: `text_classifier_learner` with
    drop_mult 0.5 and the course's gradual-unfreezing schedule, bs 32 (the course: 64; ours on a CPU: 32).
    """
    import pandas as pd
    from fastai.callback.progress import ProgressCallback
    from fastai.text.all import (AWD_LSTM, Perplexity, TextDataLoaders, accuracy, awd_lstm_clas_config,
                                 awd_lstm_lm_config, language_model_learner, set_seed, text_classifier_learner)

    from ulmfit.lm import resolve_config

    cfg = resolve_config(args.preset, sets=list(args.lm_set or []))
    if cfg.arch != "awd_lstm" or cfg.softmax != "full":
        sys.exit(f"bench_imdb: fastai's recipe trains an AWD-LSTM with the full softmax; preset {args.preset} is "
                 f"{cfg.arch} with the {cfg.softmax} softmax: use --preset small-lstm or paper")
    arch = {"emb_sz": cfg.emb_sz, "n_hid": cfg.n_hid, "n_layers": cfg.n_layers}
    out = args.work / f"fastai-{len(train)}-s{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    set_seed(args.seed, reproducible=True)
    if getattr(args, "_fastai_encoder", None) is None:
        t = time.perf_counter()
        # pretrain()'s own reader and --lm-docs cap: ours and fastai's LMs read the very same reviews
        from ulmfit.lm.train import read_corpus

        docs = read_corpus(lm_corpus(lm, args.seed), None, None, args.lm_docs or None, args.seed, print)
        df = pd.DataFrame({"text": docs.texts, "is_valid": [s == "valid" for s in docs.splits]})
        dls = TextDataLoaders.from_df(df, text_col="text", is_lm=True, valid_col="is_valid", bs=cfg.bs,
                                      seq_len=cfg.seq_len, seed=args.seed)
        learn = language_model_learner(dls, AWD_LSTM, config={**awd_lstm_lm_config, **arch}, drop_mult=0.3,
                                       pretrained=False, metrics=[accuracy, Perplexity()], path=out, model_dir=".")
        learn.remove_cbs(ProgressCallback)  # bars would flood a log; the Recorder still prints one line an epoch
        if args.lm is None:
            learn.fit_one_cycle(cfg.epochs, 2e-2)
            loss, acc, ppl = learn.validate()
            learn.save_encoder("encoder")
            args.lm = out / "encoder.pth"
            result.update(lm_perplexity=float(ppl), lm_accuracy=float(acc))
        # else --lm: an encoder.pth this configuration saved (the LM's metrics are in that run's log); the vocab
        # is rebuilt above from the same reviews, deterministically
        # absolute: fastai joins a relative name onto learn.path / model_dir
        args._fastai_encoder, args._fastai_vocab = Path(args.lm).resolve().with_suffix(""), dls.vocab
        result.update(lm_vocab=len(dls.vocab), lm_wall_s=round(time.perf_counter() - t, 1), lm=str(args.lm))
    t = time.perf_counter()
    data = labeled_corpus(train, test, args.seed)
    labeled = [(x, y, s) for x, y, s in zip(data.texts, data.labels, data.splits) if s != "test"]
    df = pd.DataFrame(labeled, columns=["text", "label", "split"]).assign(is_valid=lambda d: d.split == "valid")
    dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", valid_col="is_valid",
                                  text_vocab=args._fastai_vocab, bs=32, seq_len=72, seed=args.seed)
    learn = text_classifier_learner(dls, AWD_LSTM, config={**awd_lstm_clas_config, **arch}, drop_mult=0.5,
                                    pretrained=False, metrics=accuracy, path=out, model_dir=".")
    learn.remove_cbs(ProgressCallback)
    learn.load_encoder(args._fastai_encoder)
    moms = (0.8, 0.7, 0.8)
    learn.fit_one_cycle(1, 2e-2, moms=moms)
    learn.freeze_to(-2)
    learn.fit_one_cycle(1, slice(1e-2 / 2.6**4, 1e-2), moms=moms)
    learn.freeze_to(-3)
    learn.fit_one_cycle(1, slice(5e-3 / 2.6**4, 5e-3), moms=moms)
    learn.unfreeze()
    learn.fit_one_cycle(2, slice(1e-3 / 2.6**4, 1e-3), moms=moms)
    test_df = pd.DataFrame({"text": test.texts})
    probs, _ = learn.get_preds(dl=dls.test_dl(test_df))
    classes = list(dls.vocab[1])
    predicted = [classes[i] for i in probs.argmax(1).tolist()]
    acc = sum(p == y for p, y in zip(predicted, test.labels)) / len(test)
    result.update(accuracy=acc, clas_wall_s=round(time.perf_counter() - t, 1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=["tfidf", "ulmfit", "scratch", "fastai"], help="which configuration to run")
    p.add_argument("--preset", default="small-lstm",
                   help="LM and classifier preset (default small-lstm: the AWD-LSTM of the recorded rows and of fastai's recipe)")
    p.add_argument("--lm", type=Path, default=None,
                   help="reuse this LM bundle instead of pretraining one (fastai: the encoder.pth it saved)")
    p.add_argument("--lm-docs", type=int, default=0, help="LM trains on at most this many documents (0 = all)")
    p.add_argument("--lm-set", action="append", help="LM config override key=value (repeatable)")
    p.add_argument("--clas-set", action="append", help="classifier config override key=value (repeatable)")
    p.add_argument("--clas-epochs", type=int, default=None,
                   help="classifier epochs in all (as `ulmfit classify --epochs`: the last stage takes the rest)")
    p.add_argument("--lm-finetune", type=int, default=0, metavar="EPOCHS",
                   help="fine-tune the LM on the labeled training texts first (1 frozen epoch + EPOCHS); 0 = skip")
    p.add_argument("--backwards", action="store_true", help="train the LM and classifier right to left")
    p.add_argument("--lm-only", action="store_true",
                   help="ulmfit: pretrain the LM and report its validation metrics, no classifier (LM ablations)")
    p.add_argument("--ensemble", type=Path, default=None,
                   help="also report the accuracy of this classifier bundle averaged with the one trained here")
    p.add_argument("--self-train", type=int, default=0, metavar="N",
                   help="ulmfit: self-training (`ulmfit classify --self-train N`): the classifier (the teacher, "
                        "reported as accuracy) labels N unsup reviews, and a student trains on the most confident "
                        "of them too (self_train_accuracy); 0 = skip")
    p.add_argument("--self-train-keep", type=float, default=0.5, metavar="FRAC",
                   help="fraction of the N pseudo-labeled reviews kept (the most confident, balanced per class)")
    p.add_argument("--with-tfidf", action="store_true",
                   help="ulmfit: also report a hybrid, the mean of the classifier's and the TF-IDF baseline's "
                        "probabilities (both from the same labels)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_imdb"), help="where models are written")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 1000], help="labeled training set sizes")
    p.add_argument("--test-size", type=int, default=5000, help="stratified test sample size (0 = all 25,000)")
    p.add_argument("--seed", type=int, default=0, help="seed for the labeled sample and training (the test sample is always seed 0's)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_imdb.jsonl"), help="JSON-lines results file")
    args = p.parse_args(argv)
    command = "python scripts/bench_imdb.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.lm_only:
        if args.config != "ulmfit" or args.lm is not None:
            p.error("--lm-only trains an LM: it needs the ulmfit configuration and no --lm")
        args.labels = args.labels[:1]  # one LM; the labeled sample is drawn but not used
    for n in args.labels:
        t0 = time.perf_counter()
        train, test, lm = imdb_splits(args.test_size, n, args.seed)
        if args.config == "tfidf":
            result = run_tfidf(train, test, args.seed)
        elif args.config == "fastai":
            result = run_fastai(args, train, test, lm)
        else:
            result = run_ulmfit(args, train, test, lm, scratch=args.config == "scratch")
        row = {"config": args.config, "labels": n, "test_size": len(test), "seed": args.seed,
               "wall_s": round(time.perf_counter() - t0, 1), "command": command, **result}
        print(json.dumps(row))
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fingerprint of the tiny-preset pipeline (pretrain -> classify -> evaluate, seed 0, CPU, fp32).

Prints one JSON object: every metric the three stages report and a sha256 of every weight tensor they save.
Two runs of the same code give the same object; a refactor that claims "behaviour unchanged" must too:

    python scripts/tiny_pipeline.py > before.json   # on the old code
    python scripts/tiny_pipeline.py | diff before.json -

The corpus is synthetic (seeded), so no dataset is needed. One thread, so the numbers do not depend on the machine's
core count.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

WORDS = ("the a this that movie film plot story acting cast scene ending director actor script music and of to in "
         "it was is with for on at by camera light night city house car dog road").split()
POS, NEG = ["good", "great", "superb", "lovely"], ["bad", "awful", "dire", "bland"]


def corpus(n: int, seed: int):
    from ulmfit.data import Corpus

    rng = random.Random(seed)
    texts, labels, splits = [], [], []
    for i in range(n):
        pos = rng.random() < 0.5
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 30))]
        words.insert(rng.randrange(len(words)), rng.choice(POS if pos else NEG))
        texts.append(" ".join(words))
        labels.append("pos" if pos else "neg")
        splits.append("valid" if i % 5 == 0 else "train")
    return Corpus(texts, labels, splits, "tiny-pipeline")


def weights_digest(bundle: Path) -> dict[str, str]:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(bundle.glob("*.safetensors")):
        for name, arr in sorted(load_file(str(f)).items()):
            out[f"{f.stem}/{name}"] = hashlib.sha256(arr.tobytes()).hexdigest()[:16]
    return out


def main() -> None:
    import torch

    from ulmfit.classify import resolve_config as clas_config
    from ulmfit.classify import train_classifier
    from ulmfit.classify.evaluation import evaluate
    from ulmfit.lm import pretrain
    from ulmfit.lm.config import resolve_config as lm_config

    torch.set_num_threads(1)
    quiet = lambda s: None  # noqa: E731
    data = corpus(600, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lm = pretrain(data, tmp / "lm", lm_config("tiny", sets=["precision=fp32"]), seed=0, device="cpu", log=quiet)
        clas = train_classifier(data, lm=lm.best, out=tmp / "clas",
                                config=clas_config("tiny", sets=["precision=fp32", "seed=0"]), device="cpu",
                                log=quiet)
        report = evaluate([clas.best], data, split="valid", device="cpu")
        result = {
            "lm_metrics": lm.metrics,
            "clas_metrics": clas.metrics,
            "clas_valid": {k: clas.valid[k] for k in ("accuracy", "macro_f1", "nll")},
            "ngram": None if clas.ngram is None else {k: clas.ngram[k] for k in ("weight", "c")},
            "evaluate": {k: report.headline[k] for k in ("accuracy", "macro_f1", "nll")},
            "lm_weights": weights_digest(lm.best),
            "clas_weights": weights_digest(clas.best),
        }
    for row in result["lm_metrics"] + result["clas_metrics"]:
        row.pop("seconds", None)
        row.pop("time", None)
        row.pop("train_tokens_per_s", None)
    json.dump(result, sys.stdout, indent=1, sort_keys=True, default=str)
    print()


if __name__ == "__main__":
    main()

"""Training precision: the device rule, bad choices, and bf16 autocast on the CPU actually training in bf16."""

from __future__ import annotations

import pytest
import torch

from ulmfit import runtime
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import resolve_config


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_has_it(monkeypatch, has_bf16):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: has_bf16)
    assert runtime.resolve_precision("auto", "cpu") == ("bf16" if has_bf16 else "fp32")
    assert runtime.resolve_precision("fp32", "cpu") == "fp32"


def test_bad_choices_are_clear_errors():
    assert runtime.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UlmfitError, match="fp16 needs a CUDA GPU"):
        runtime.resolve_precision("fp16", "cpu")
    with pytest.raises(UlmfitError, match="precision"):
        resolve_config("small", sets=["precision=int8"])


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_cpu_training_runs_in_the_chosen_precision_and_saves_fp32(tmp_path, monkeypatch, precision, dtype):
    from fastai.text.models.core import LinearDecoder

    from ulmfit.bundle import read_bundle
    from ulmfit.lm import pretrain
    from ulmfit.lm.synthetic import human_numbers

    seen = set()
    forward = LinearDecoder.forward

    def spy(self, input):
        out = forward(self, input)
        if self.training:
            seen.add(out[0].dtype)
        return out

    monkeypatch.setattr(LinearDecoder, "forward", spy)
    monkeypatch.setenv("ULMFIT_THREADS", "1")
    cfg = resolve_config("tiny", sets=[f"precision={precision}"])
    res = pretrain(human_numbers(n_docs=300, numbers_per_doc=20, seed=0), tmp_path / "lm", cfg, seed=0, log=lambda s: None)
    assert seen == {dtype}
    # the synthetic corpus is still learned (most-frequent-token accuracy is < 0.2 on it, see test_lm)
    assert res.final["accuracy"] > 0.4, res.final
    state = read_bundle(tmp_path / "lm").load_state("model")
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_tiny_presets_train_in_fp32_and_the_classifier_reports_its_precision(tmp_path, monkeypatch):
    from ulmfit.classify.config import PRESETS as CLAS_PRESETS
    from ulmfit.classify.config import resolve_config as clas_config
    from ulmfit.classify.train import train_classifier
    from ulmfit.lm import pretrain
    from ulmfit.lm.synthetic import human_numbers

    assert resolve_config("tiny").precision == "fp32" and CLAS_PRESETS["tiny"]["precision"] == "fp32"
    assert resolve_config("small").precision == "auto"
    monkeypatch.setenv("ULMFIT_THREADS", "1")
    corpus = human_numbers(n_docs=80, seed=0)
    lm = pretrain(corpus, tmp_path / "lm", "tiny", seed=0, log=lambda s: None).best
    lines: list[str] = []  # the labels say whether a document's count started even: the pipeline, not accuracy
    res = train_classifier(corpus, lm=lm, out=tmp_path / "clas", config=clas_config("tiny", sets=["precision=bf16"]),
                           log=lines.append)
    assert res.best.is_dir()
    assert any(x.startswith("encoder:") and x.endswith("; bf16") for x in lines), lines

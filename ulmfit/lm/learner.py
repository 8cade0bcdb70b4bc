"""The fastai Learner every language-model stage trains (`pretrain`, `finetune`, `ulmfit lr-find lm`): built from
the config (`make_learner`), set up over a token store (`setup_learner`: threads, device, seeds, the batch size,
the loaders, the model), and fastai's one-cycle schedule with an exact mid-cycle restart (`fit_one_cycle`)."""

from __future__ import annotations

import numpy as np
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.callback.rnn import ModelResetter, RNNCallback, RNNRegularizer
from fastai.callback.schedule import combined_cos
from fastai.callback.training import GradientClip
from fastai.learner import Learner
from fastai.optimizer import Adam
from fastai.text.models.awdlstm import awd_lstm_lm_split

from ulmfit import distributed
from ulmfit._memory import trim_callback
from ulmfit.data import Corpus
from ulmfit.lm.config import LMConfig, Phase, fit_min_steps, fit_softmax
from ulmfit.lm.model import build_lm, lm_loss, lm_metrics, load_lm_state
from ulmfit.lm.progress import show_bars
from ulmfit.loaders import lm_dataloaders
from ulmfit.runtime import apply_precision, resolve_device, seed_all, set_threads
from ulmfit.store import TokenStore

TRAIN_SPLITS = ("train", "unsup")   # all non-test splits but valid feed the LM; test is never read
VALID_SPLIT = "valid"


def make_learner(cfg: LMConfig, dls, vocab, device) -> tuple[Learner, dict]:
    """The fastai Learner of `language_model_learner`, built from our config: the LM of cfg.arch, flattened cross
    entropy (or the adaptive softmax's NLL: `ulmfit.lm.model.lm_loss`), Adam, `awd_lstm_lm_split` layer groups
    (the QRNN has the AWD-LSTM's attributes), ModelResetter + RNNRegularizer (AR/TAR) + GradientClip, accuracy
    and perplexity (`lm_metrics`); freed memory handed back to the OS once a minute (`ulmfit._memory`); the
    precision of `cfg.precision` on `device` (`ulmfit.runtime`); under torchrun, trained by all ranks together
    (`ulmfit.distributed.data_parallel`). Returns (learner, arch)."""
    vocab_size = len(vocab.itos)
    arch = cfg.arch_dict(vocab_size)
    arch["pad_token"] = int(vocab.pad_id)
    model = build_lm(arch, vocab_size)
    cbs = [ModelResetter(), RNNCallback(), trim_callback()]
    if cfg.alpha or cfg.beta:
        cbs.append(RNNRegularizer(alpha=cfg.alpha, beta=cfg.beta))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    learn = Learner(dls, model, loss_func=lm_loss(model), opt_func=Adam, splitter=awd_lstm_lm_split,
                    metrics=lm_metrics(model), wd=cfg.wd, moms=cfg.moms, cbs=cbs)
    if not show_bars():
        learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)])
    return distributed.data_parallel(apply_precision(learn, cfg.precision, device)), arch


def fit_one_cycle(learn: Learner, n_epoch: int, start_epoch: int, phase: Phase, cbs: list) -> None:
    """fastai's one-cycle (cosine lr warm-up/anneal, inverse momentum) with an exact mid-cycle restart.

    The schedule position is computed from (epoch, batch) each step rather than accumulated, so a run resumed at
    `start_epoch` sets bit-identical learning rates and momenta to an uninterrupted one.
    """
    learn.opt.set_hyper("lr", phase.lr)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    scheds = {"lr": combined_cos(phase.pct_start, lr_max / 25.0, lr_max, lr_max / 1e5),
              "mom": combined_cos(phase.pct_start, *phase.moms)}

    class OneCycle(Callback):
        order, run_valid = 10, False  # after TrainEvalCallback, before the optimizer step

        def before_batch(self) -> None:
            if not self.training:
                return
            n_iter = self.n_iter
            pct = ((start_epoch + self.epoch) * n_iter + self.iter) / (n_epoch * n_iter)
            for name, f in scheds.items():
                self.opt.set_hyper(name, f(pct))

    learn.fit(n_epoch - start_epoch, cbs=[OneCycle(), *cbs], wd=phase.wd)


def setup_learner(store: TokenStore, corpus: Corpus, cfg: LMConfig, phases: list[Phase], *, seed: int,
                  backwards: bool, device: str | None, init_state: dict | None):
    """The Learner every LM stage trains (and `ulmfit lr-find lm` sweeps): threads, device, seeds, the batch size
    `fit_min_steps` settles on, the loaders, the model (with `init_state` loaded; the output layer `fit_softmax`
    settles on). Returns (learner, arch, config, a note on what was changed to fit the data or None, the training
    splits, the device)."""
    set_threads()
    dev = resolve_device(device)
    seed_all(seed)
    train_splits = tuple(s for s in TRAIN_SPLITS if s in store.splits())
    # before the Run exists: checkpoints record (and --resume compares) the batch size actually trained with
    cfg, bs_note = fit_min_steps(cfg, sum(store.n_tokens(s) for s in train_splits), sum(p.epochs for p in phases),
                                 n_valid_tokens=store.n_tokens(VALID_SPLIT) if VALID_SPLIT in store.splits() else None,
                                 world_size=distributed.world_size())
    cfg, softmax_note = fit_softmax(cfg, len(store.vocab.itos))
    note = "; ".join(n for n in (bs_note, softmax_note) if n) or None
    # the same options can still meet different files on different machines
    distributed.check_same({"data": corpus.fingerprint, "vocab": store.vocab.fingerprint, "bs": cfg.bs}, "data")
    dls = lm_dataloaders(store, train_splits=train_splits, valid_split=VALID_SPLIT, bs=cfg.bs, seq_len=cfg.seq_len,
                         backwards=backwards, seed=seed, device=dev)
    learn, arch = make_learner(cfg, dls, store.vocab, dev)
    if init_state is not None:
        load_lm_state(learn.model, init_state, "the pretrained model")
    return learn, arch, cfg, note, train_splits, dev

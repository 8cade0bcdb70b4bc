"""Batches for fastai's Learner, read straight from a TokenStore's memory-mapped arrays.

LM: fastai's LMDataLoader layout. The documents of an epoch (shuffled with the seed and epoch for train)
are concatenated into one stream; the stream is cut into `bs` rows of equal length `bl`, and batch k is
columns [k*seq_len, (k+1)*seq_len) of those rows, the target the same window shifted by one token. So row i
of batch k+1 continues row i of batch k and the hidden state can carry over. fastai re-concatenates one
tensor per document every epoch; here the stream is one numpy array and each batch is a strided slice.

Classifier: fastai's SortedDL ("sortish" order for train, longest first for valid) and pad_input_chunk
padding (pad_first, whole chunks of seq_len in front, the rest at the end) as fastai's SentenceEncoder
expects.

Several processes (`ulmfit.distributed`): every rank computes the same epoch (order, stream, batch plan) from
(seed, epoch) and takes its share, so no rank waits for another to learn what to read. LM: the stream is laid
out as world_size*bs rows, and rank r owns rows r*bs .. (r+1)*bs-1, so its row i still continues across batches;
all ranks share the sequence-length plan. Classifier: rank r takes every world_size-th batch of the epoch's
batches, for training the same number on every rank (the few left over are dropped), for validation all of them:
its batches are those of one process, and fastai's classifier pads (and so scores) a document as its batch does.
The `*_dataloaders` functions take the rank and world size of this process unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ulmfit import distributed
from ulmfit.errors import UlmfitError
from ulmfit.runtime import resolve_device

if TYPE_CHECKING:
    import torch

    from ulmfit.store import TokenStore


def _base():
    from fastai.data.load import DataLoader

    return DataLoader


def _make_lm_loader_class():
    import torch
    from fastai.torch_core import to_detach, to_device

    class LMStreamLoader(_base()):
        """A fastai DataLoader over a token stream (see module doc)."""

        def __init__(self, sources: list[tuple[np.ndarray, np.ndarray]], bs: int = 64, seq_len: int = 72,
                     shuffle: bool = False, seed: int = 42, backwards: bool = False,
                     random_bptt: bool = False, device=None, what: str = "train", rank: int = 0,
                     world_size: int = 1, **kwargs) -> None:
            # Plain ndarray views of the memory maps: slicing them is much cheaper than slicing np.memmap.
            sources = [(np.asarray(ids), np.asarray(off)) for ids, off in sources]
            self.sources, self.seq_len, self.seed, self.backwards = sources, seq_len, seed, backwards
            self.random_bptt, self.what, self.epoch = random_bptt, what, 0
            self.rank, self.world_size = _check_shard(rank, world_size)
            starts, ends, src = [], [], []
            for k, (_ids, off) in enumerate(sources):
                starts.append(off[:-1])
                ends.append(off[1:])
                src.append(np.full(len(off) - 1, k, dtype=np.int32))
            self.doc_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
            self.doc_end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
            self.doc_src = np.concatenate(src) if src else np.zeros(0, np.int32)
            self.n_tokens = int((self.doc_end - self.doc_start).sum())
            n_rows = world_size * bs  # every rank's rows, laid out one after the other in the stream
            need = n_rows * seq_len + 1
            if self.n_tokens < need:
                most = (self.n_tokens - 1) // seq_len // world_size
                if world_size == 1:
                    raise UlmfitError(
                        f"the {what} text has {self.n_tokens} tokens, too few for one batch of bs={bs} rows x "
                        f"seq_len={seq_len} (needs {need})",
                        hint=f"lower bs (at most {max(1, most)} at this seq_len) or seq_len, or add text")
                raise UlmfitError(
                    f"the {what} text has {self.n_tokens} tokens, too few for one batch of {world_size} processes "
                    f"x bs={bs} rows x seq_len={seq_len} (needs {need})",
                    hint=(f"lower bs (at most {most} with {world_size} processes)" if most else
                          f"use fewer processes (at most {max(1, (self.n_tokens - 1) // seq_len)} at bs 1)")
                    + ", lower seq_len, or add text")
            self.bl = (self.n_tokens - 1) // n_rows  # tokens per row (fastai: round_multiple(total-1, bs) // bs)
            self._plans: dict[int, list[int]] = {}
            super().__init__(dataset=None, bs=bs, shuffle=shuffle, drop_last=False, device=device, indexed=True,
                             n=self.n_tokens, **kwargs)

        # --- what an epoch looks like -----------------------------------------------------------------
        def _rng(self, epoch: int) -> np.random.Generator:
            return np.random.default_rng([self.seed, epoch])

        def plan(self, epoch: int | None = None) -> list[int]:
            """Sequence lengths of the batches of `epoch` (default: the next one)."""
            epoch = self.epoch if epoch is None else epoch
            if epoch not in self._plans:
                if not self.random_bptt:
                    n_full, rest = divmod(self.bl, self.seq_len)
                    lens = [self.seq_len] * n_full + ([rest] if rest else [])
                else:  # AWD-LSTM: mostly seq_len, sometimes half, jittered; never past the row's end
                    rng = np.random.default_rng([self.seed, epoch, 1])
                    lens, pos = [], 0
                    while pos < self.bl:
                        bptt = self.seq_len if rng.random() < 0.95 else self.seq_len / 2
                        n = min(max(5, int(rng.normal(bptt, 5))), self.bl - pos)
                        lens.append(n)
                        pos += n
                self._plans = {epoch: lens}  # keep only the current plan
            return self._plans[epoch]

        def stream(self, epoch: int | None = None) -> np.ndarray:
            """The epoch's token stream (documents in the epoch's order; reversed when backwards)."""
            epoch = self.epoch if epoch is None else epoch
            n_docs = len(self.doc_start)
            order = self._rng(epoch).permutation(n_docs) if self.shuffle else np.arange(n_docs)
            if len(self.sources) == 1 and not self.shuffle:
                s = np.asarray(self.sources[0][0][self.doc_start[0]:self.doc_end[-1]])
            else:
                srcs = [ids for ids, _ in self.sources]
                s = np.concatenate([srcs[k][a:b] for k, a, b in
                                    zip(self.doc_src[order], self.doc_start[order], self.doc_end[order])])
            return np.ascontiguousarray(s[::-1]) if self.backwards else s

        def rows(self, s: np.ndarray) -> np.ndarray:
            """This rank's rows of the stream `s`: rows[i, j] = s[(rank*bs + i)*bl + j], bs rows of bl+1 tokens
            (the last column is the final target). A view, not a copy."""
            bs, bl = self.bs, self.bl
            mine = s[self.rank * bs * bl:]
            return np.lib.stride_tricks.as_strided(mine, shape=(bs, bl + 1), strides=(bl * s.strides[0], s.strides[0]),
                                                   writeable=False)

        def __len__(self) -> int:
            return len(self.plan())

        def to_detach(self, b, cpu: bool = True, gather: bool = True):
            # never gathered batch by batch: the ranks' metrics are combined once per validation
            # (ulmfit.distributed), and fastai's per-batch all_gather needs equal shapes on every rank
            return to_detach(b, cpu, gather=False)

        def __iter__(self):
            self.randomize()
            self.before_iter()
            epoch = self.epoch
            lens = self.plan(epoch)
            s = self.stream(epoch)
            rows = self.rows(s)
            self.epoch += 1
            pos = 0
            for n in lens:
                window = torch.from_numpy(rows[:, pos:pos + n + 1].astype(np.int64))  # (bs, n+1)
                b = (window[:, :-1], window[:, 1:])  # x (bs, n), y (bs, n)
                pos += n
                if self.device is not None:
                    b = to_device(b, self.device)
                yield self.after_batch(b)
            self.after_iter()

        def new(self, dataset=None, cls=None, **kwargs):
            """A copy with some settings changed (fastai calls new(shuffle=False, drop_last=False))."""
            args = dict(bs=self.bs, seq_len=self.seq_len, shuffle=self.shuffle, seed=self.seed,
                        backwards=self.backwards, random_bptt=self.random_bptt, device=self.device, what=self.what,
                        rank=self.rank, world_size=self.world_size)
            args.update({k: v for k, v in kwargs.items() if k in args})
            return type(self)(self.sources, **args)

    return LMStreamLoader


def _make_clas_loader_class():
    import torch
    from fastai.torch_core import to_detach, to_device

    class ClasLoader(_base()):
        """fastai SortedDL + pad_input_chunk over memory-mapped documents."""

        def __init__(self, ids: np.ndarray, offsets: np.ndarray, y: np.ndarray | None, bs: int = 64,
                     pad_id: int = 1, seq_len: int = 72, shuffle: bool = False, seed: int = 42,
                     backwards: bool = False, drop_last: bool = False, device=None, what: str = "train",
                     rank: int = 0, world_size: int = 1, **kwargs) -> None:
            self.ids_, self.offsets_, self.y = np.asarray(ids), np.asarray(offsets), y
            self.lens = np.diff(offsets)
            self.pad_id, self.seq_len, self.seed, self.backwards = pad_id, seq_len, seed, backwards
            self.what, self.epoch = what, 0
            self.rank, self.world_size = _check_shard(rank, world_size)
            n = len(self.lens)
            drop_last = drop_last and n > bs  # never drop the only batch
            if world_size > 1 and shuffle and (n // bs if drop_last else -(-n // bs)) < world_size:
                raise UlmfitError(f"the {what} split's {n} documents make {max(1, n // bs)} batch(es) of bs={bs}, "
                                  f"fewer than the {world_size} processes",
                                  hint=f"lower --bs (at most {n // world_size}) or use fewer processes")
            super().__init__(dataset=None, bs=bs, shuffle=shuffle, drop_last=drop_last, device=device, indexed=True,
                             n=len(self.lens), **kwargs)

        def order(self, epoch: int | None = None) -> np.ndarray:
            """Document order of an epoch: sortish for train (fastai SortedDL.shuffle_fn), longest first else."""
            epoch = self.epoch if epoch is None else epoch
            lens, n, bs = self.lens, len(self.lens), self.bs
            if not self.shuffle:
                return np.argsort(-lens, kind="stable")
            rng = np.random.default_rng([self.seed, epoch])
            idxs = rng.permutation(n)
            # The longest document goes in the first batch, so an out-of-memory error shows at once.
            k = int(np.flatnonzero(idxs == int(np.argmax(lens)))[0])
            idxs[0], idxs[k] = idxs[k], idxs[0]
            # Sort within chunks of 50 batches, longest first, then shuffle the batches (not the first/last).
            sz = bs * 50
            chunks = [c[np.argsort(-lens[c], kind="stable")] for c in (idxs[i:i + sz] for i in range(0, n, sz))]
            sort_idx = np.concatenate(chunks)
            batches = [sort_idx[i:i + bs] for i in range(0, n, bs)]
            if len(batches) > 2:
                middle = [batches[i] for i in rng.permutation(np.arange(1, len(batches) - 1))]
                batches = [batches[0], *middle, batches[-1]]
            return np.concatenate(batches)

        def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
            """This rank's batches of `epoch` (document indices)."""
            o = self.order(epoch)
            out = [o[i:i + self.bs] for i in range(0, len(o), self.bs)]
            if self.drop_last and out and len(out[-1]) < self.bs:
                out = out[:-1]
            if self.shuffle:  # training: as many batches on every rank (DDP steps together)
                out = out[:len(out) // self.world_size * self.world_size]
            return out[self.rank::self.world_size]

        def collate(self, idx: np.ndarray) -> torch.Tensor:
            return pad_batch([self.ids_[self.offsets_[i]:self.offsets_[i + 1]] for i in idx],
                             self.pad_id, self.seq_len, self.backwards)

        def __iter__(self):
            self.randomize()
            self.before_iter()
            batches = self.batch_indices(self.epoch)
            self.epoch += 1
            for idx in batches:
                x = self.collate(idx)
                b = (x, torch.from_numpy(self.y[idx])) if self.y is not None else (x,)
                if self.device is not None:
                    b = to_device(b, self.device)
                yield self.after_batch(b)
            self.after_iter()

        def __len__(self) -> int:
            n = len(self.lens)
            n_batches = n // self.bs if self.drop_last else -(-n // self.bs)
            if self.shuffle:
                return n_batches // self.world_size
            return len(range(self.rank, n_batches, self.world_size))

        def to_detach(self, b, cpu: bool = True, gather: bool = True):
            # as LMStreamLoader.to_detach: the ranks' batches differ in shape and number
            return to_detach(b, cpu, gather=False)

        def new(self, dataset=None, cls=None, **kwargs):
            args = dict(bs=self.bs, pad_id=self.pad_id, seq_len=self.seq_len, shuffle=self.shuffle, seed=self.seed,
                        backwards=self.backwards, drop_last=self.drop_last, device=self.device, what=self.what,
                        rank=self.rank, world_size=self.world_size)
            args.update({k: v for k, v in kwargs.items() if k in args})
            return type(self)(self.ids_, self.offsets_, self.y, **args)

    return ClasLoader


_classes: dict[str, type] = {}


def __getattr__(name: str):
    """LMStreamLoader / ClasLoader, built on first use so importing this module does not import fastai."""
    makers = {"LMStreamLoader": _make_lm_loader_class, "ClasLoader": _make_clas_loader_class}
    if name in makers:
        if name not in _classes:
            _classes[name] = makers[name]()
        return _classes[name]
    raise AttributeError(name)


def pad_batch(docs: Sequence[np.ndarray], pad_id: int, seq_len: int = 72, backwards: bool = False) -> torch.Tensor:
    """fastai's pad_input_chunk(pad_first=True): whole seq_len chunks of padding before, the rest after.

    Backwards documents are reversed first (fastai reverses in TextBlock, before padding).
    """
    import torch

    max_len = max(len(d) for d in docs)
    x = np.full((len(docs), max_len), pad_id, dtype=np.int64)
    for r, d in enumerate(docs):
        n = len(d)
        front = ((max_len - n) // seq_len) * seq_len
        x[r, front:front + n] = d[::-1] if backwards else d
    return torch.from_numpy(x)


def clas_test_batches(docs: Sequence[np.ndarray], bs: int, pad_id: int, backwards: bool = False,
                      seq_len: int = 72) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Inference batches, longest documents first: (x LongTensor[b, max_len], original indices)."""
    lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    order = np.argsort(-lens, kind="stable")
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        yield pad_batch([docs[j] for j in idx], pad_id, seq_len, backwards), idx


def _check_shard(rank: int, world_size: int) -> tuple[int, int]:
    if not (world_size >= 1 and 0 <= rank < world_size):
        raise ValueError(f"rank {rank} of world size {world_size}")
    return rank, world_size


def _shard(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size) as given, else this process's in its torchrun job ((0, 1) without one)."""
    return (distributed.rank() if rank is None else rank,
            distributed.world_size() if world_size is None else world_size)


def _present(store: TokenStore, splits: Sequence[str] | str, what: str) -> list[str]:
    splits = [splits] if isinstance(splits, str) else list(splits)
    found = [s for s in splits if s in store.splits()]
    if not found:
        raise UlmfitError(f"the token store has no {what} split ({' or '.join(splits)})",
                          hint=f"it has: {', '.join(store.splits()) or 'none'}")
    return found


def lm_dataloaders(store: TokenStore, *, train_splits: Sequence[str] = ("train", "unsup"),
                   valid_split: str = "valid", bs: int = 64, seq_len: int = 72, backwards: bool = False,
                   seed: int = 42, device=None, random_bptt: bool = False, rank: int | None = None,
                   world_size: int | None = None):
    """fastai DataLoaders (train shuffled per epoch, valid in order) of (x, y) LongTensor[bs, seq_len] pairs.

    train_splits that the store lacks are skipped (at least one must exist). `random_bptt` varies the
    sequence length per batch as AWD-LSTM does (off by default). `rank` of `world_size` processes reads its
    own bs rows of world_size*bs (default: this process's place in its torchrun job).
    """
    from fastai.data.core import DataLoaders

    if bs < 1 or seq_len < 1:
        raise UlmfitError(f"bs and seq_len must be positive (got bs={bs}, seq_len={seq_len})")
    cls = __getattr__("LMStreamLoader")
    train = [(store.ids(s), store.offsets(s)) for s in _present(store, train_splits, "training")]
    valid = [(store.ids(s), store.offsets(s)) for s in _present(store, [valid_split], "validation")]
    names = "+".join(_present(store, train_splits, "training"))
    dev = resolve_device(device)
    rank, world_size = _shard(rank, world_size)
    dls = DataLoaders(cls(train, bs=bs, seq_len=seq_len, shuffle=True, seed=seed, backwards=backwards,
                          random_bptt=random_bptt, what=names, rank=rank, world_size=world_size),
                      cls(valid, bs=bs, seq_len=seq_len, shuffle=False, seed=seed, backwards=backwards,
                          what=valid_split, rank=rank, world_size=world_size),
                      device=dev)
    dls.vocab = store.vocab.itos
    return dls


def label_ids(store: TokenStore, split: str, labels: list[str]) -> np.ndarray:
    """Labels of `split` as indices into `labels`; UlmfitError naming any label that is not there."""
    index = {str(y): i for i, y in enumerate(labels)}
    raw = store.labels(split)
    missing = sorted({str(y) for y in raw if y is not None and str(y) not in index})
    if missing:
        raise UlmfitError(f"the {split} split has label(s) not among {labels}: {', '.join(missing[:5])}"
                          + (" ..." if len(missing) > 5 else ""),
                          hint="pass the full list of labels, or fix the data")
    if any(y is None for y in raw):
        raise UlmfitError(f"the {split} split has {sum(y is None for y in raw)} unlabeled documents",
                          hint="a classifier needs a label for every training and validation document")
    return np.fromiter((index[str(y)] for y in raw), dtype=np.int64, count=len(raw))


def clas_dataloaders(store: TokenStore, labels: list[str], *, train_split: str = "train",
                     valid_split: str = "valid", bs: int = 64, backwards: bool = False, seed: int = 42,
                     device=None, seq_len: int = 72, targets=None, rank: int | None = None,
                     world_size: int | None = None):
    """fastai DataLoaders of (x LongTensor[bs, max_len_in_batch] padded as pad_input_chunk, y[bs]).

    y is each document's label id (LongTensor), or `targets(split)` when given: any per-document array, such as
    the multi-hot rows of a multi-label task or the standardised values of a regression (`ulmfit.classify.task`).
    `rank` of `world_size` processes reads its own share (default: this process's place in its torchrun job)."""
    from fastai.data.core import DataLoaders
    from fastcore.foundation import L

    if not labels:
        raise UlmfitError("no labels given", hint="pass the list of class names")
    if bs < 1:
        raise UlmfitError(f"bs must be positive (got {bs})")
    cls = __getattr__("ClasLoader")
    pad = store.vocab.pad_id
    rank, world_size = _shard(rank, world_size)
    loaders = []
    for split, train in ((train_split, True), (valid_split, False)):
        _present(store, [split], "training" if train else "validation")
        y = label_ids(store, split, labels) if targets is None else targets(split)
        if len(y) == 0:
            raise UlmfitError(f"the {split} split has no documents", hint="check the data source")
        loaders.append(cls(store.ids(split), store.offsets(split), y, bs=bs, pad_id=pad, seq_len=seq_len,
                           shuffle=train, seed=seed, backwards=backwards, drop_last=train, what=split, rank=rank,
                           world_size=world_size))
    dls = DataLoaders(*loaders, device=resolve_device(device))
    dls.vocab = L([store.vocab.itos, list(labels)])
    dls.c = len(labels)
    dls.labels = list(labels)
    return dls

"""Write any corpus `ulmfit` can read as one compressed parquet table (text, label, split).

    ULMFIT_MIRROR=../shared/data python scripts/export_corpus.py imdb .gpu/imdb.parquet

Why: a GPU machine that cannot reach the data set's mirror gets the whole corpus as one file (IMDb: 42 MB with
zstd, against 84 MB for the official tarball), and every `ulmfit` command reads it back with the same splits
(`valid_pct=0` here keeps the source's own splits; the commands carve "valid" out of "train" as usual).
Unlabeled rows get an empty label, which the readers take as "no label".
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a registered data set name or a path load_corpus reads")
    p.add_argument("out", type=Path, help="the .parquet file to write")
    p.add_argument("--level", type=int, default=19, help="zstd compression level")
    args = p.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ulmfit._io import atomic_write_bytes
    from ulmfit.data import load_corpus

    corpus = load_corpus(args.src, valid_pct=0)
    table = pa.table({"text": corpus.texts, "label": ["" if y is None else y for y in corpus.labels],
                      "split": corpus.splits})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", compression_level=args.level)
    atomic_write_bytes(args.out, sink.getvalue().to_pybytes())
    print(f"wrote {args.out}: {len(corpus):,} documents ({dict(Counter(corpus.splits))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

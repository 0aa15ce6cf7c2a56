"""Ingest helper run as a subprocess by tests/test_crash.py (and killed by it).

    python tests/_crash_ingest.py URL MODEL_DIR COLLECTION N BATCH [HOLD_FILE]

Adds the first N sentences of gensim's lee_background corpus (ids 0..N-1) to an existing
collection, BATCH texts per ``Collection.add`` call. Prints ``ready`` once the encoder is
loaded and ``batch <i>`` after each call. With HOLD_FILE, waits after each call while that
file exists. Ends with one JSON line: ``{"written": n}``, or ``{"error": type, "message":
...}`` and exit status 3 when the ingest failed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def sentences(n: int) -> list[str]:
    from pgembed.corpus import lee_background

    out = [s.strip() for doc in lee_background() for s in doc.split(". ") if len(s.split()) > 4]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} sentences, asked for {n}")
    return out[:n]


def main(argv: list[str]) -> int:
    url, model_dir, name, n_s, batch_s = argv[:5]
    hold = Path(argv[5]) if len(argv) > 5 else None
    n, batch = int(n_s), int(batch_s)
    from pgembed import Collection, db
    from pgembed.encoders import Encoder
    from pgembed.encoders.testing import TINY_NAME

    texts = sentences(n)
    enc = Encoder.load(TINY_NAME, device="cpu", model_dir=Path(model_dir))
    written = 0
    print("ready", flush=True)
    try:
        coll = Collection.open(db.create_engine(url), name, enc)
        for i, start in enumerate(range(0, n, batch)):
            chunk = texts[start : start + batch]
            written += coll.add(chunk, ids=range(start, start + len(chunk)), progress=False)
            print(f"batch {i}", flush=True)
            while hold is not None and hold.exists():
                time.sleep(0.02)
    except Exception as exc:  # reported as JSON for the test to check
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
        return 3
    print(json.dumps({"written": written}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

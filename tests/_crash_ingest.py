"""Ingest helper run as a subprocess by tests/test_crash.py (and killed by it).

    python tests/_crash_ingest.py URL MODEL_DIR COLLECTION N BATCH [HOLD_FILE [MODE [STOP]]]

Adds the first N sentences of gensim's lee_background corpus (ids 0..N-1) to an existing
collection, BATCH texts per ``Collection.add`` call. Prints ``ready`` once the encoder is
loaded and ``batch <i>`` after each call. With HOLD_FILE, waits after each call while that
file exists. Ends with one JSON line: ``{"written": n}``, or ``{"error": type, "message":
...}`` and exit status 3 when the ingest failed.

With MODE (``auto``, ``bulk`` or ``incremental``; HOLD_FILE may be ``-``): one
``add(mode=MODE, batch_size=BATCH)`` of all N texts, printing ``written <rows>`` after each
committed batch and ``index <name>`` as each index build starts. STOP, ``write:<rows>`` or
``index:<i>``, prints ``holding`` at that point (once <rows> are written, or as the i-th
index build starts, from 1) and waits there while HOLD_FILE exists (forever without one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def sentences(n: int) -> list[str]:
    from pgembed.corpus import lee_background

    out = [s.strip() for doc in lee_background() for s in doc.split(". ") if len(s.split()) > 4]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} sentences, asked for {n}")
    return out[:n]


def main(argv: list[str]) -> int:
    url, model_dir, name, n_s, batch_s = argv[:5]
    hold = Path(argv[5]) if len(argv) > 5 and argv[5] != "-" else None
    mode = argv[6] if len(argv) > 6 else None
    stop = argv[7].split(":") if len(argv) > 7 else None
    n, batch = int(n_s), int(batch_s)
    from pgembed import Collection, db
    from pgembed.encoders import Encoder
    from pgembed.encoders.testing import TINY_NAME

    texts = sentences(n)
    enc = Encoder.load(TINY_NAME, device="cpu", model_dir=Path(model_dir))
    written = 0
    print("ready", flush=True)
    builds = 0

    def wait() -> None:
        print("holding", flush=True)
        while hold is None or hold.exists():
            time.sleep(0.02)

    def on_progress(p: Any) -> None:
        nonlocal builds
        if p.stage == "write":
            print(f"written {p.done}", flush=True)
            if stop is not None and stop[0] == "write" and p.done == int(stop[1]):
                wait()
        elif p.phase == "start":
            builds += 1
            print(f"index {p.name}", flush=True)
            if stop is not None and stop[0] == "index" and builds == int(stop[1]):
                wait()

    try:
        coll = Collection.open(db.create_engine(url), name, enc)
        if mode is not None:
            from pgembed.storage.bulk import check_mode

            written = coll.add(texts, ids=range(n), mode=check_mode(mode), batch_size=batch,
                               progress=False, on_progress=on_progress)  # fmt: skip
            print(json.dumps({"written": written, "mode": coll.last_mode}), flush=True)
            return 0
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

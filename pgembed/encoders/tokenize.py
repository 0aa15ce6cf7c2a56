"""Tokenization with the ``tokenizers`` library only (no transformers at run time).

Texts are checked (strings, not blank), prefixed, tokenized with truncation at the model's
maximum length, sorted by length and cut into batches by a token budget, so short texts are
not padded to the length of long ones.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pgembed._types import Int64Array
from pgembed.errors import EmptyInputError, InputError


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's maximum length and were cut."""


def check_texts(texts: Iterable[object], offset: int = 0) -> list[str]:
    """Return ``texts`` as a list of strings; InputError/EmptyInputError naming the index."""
    if isinstance(texts, str | bytes):
        raise InputError(
            "texts must be a sequence of strings, got a single "
            f"{type(texts).__name__}; wrap it in a list: [text]"
        )
    out: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(
                f"text at index {offset + i} is a {type(text).__name__}, not a str: {text!r:.60}"
            )
        if not text.strip():
            raise EmptyInputError(f"text at index {offset + i} is empty or only whitespace")
        if not text.isascii():
            _check_unicode(text, offset + i)
        out.append(text)
    return out


def _check_unicode(text: str, index: int) -> None:
    """Lone surrogates (from bad decoding) are not text: tokenizers and PostgreSQL refuse them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"text at index {index} holds a lone surrogate {text[exc.start]!r} at position "
            f"{exc.start}, which is not valid Unicode; remove it, or decode the source with "
            "errors='replace'"
        ) from None


@dataclass
class Tokenized:
    """Token ids of a list of texts, unpadded, in input order."""

    ids: list[list[int]]
    special: list[list[int]]  # 1 where the token is [CLS]/[SEP]/... (from the tokenizer)
    truncated: int  # how many texts were cut at max_length

    @property
    def lengths(self) -> Int64Array:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` set to truncate at ``max_length`` and never pad."""

    def __init__(self, path: Path, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        self._tok: Any = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = pad_id

    def tokenize(self, texts: Sequence[str], offset: int = 0) -> Tokenized:
        encs = self._tok.encode_batch(list(texts))
        ids: list[list[int]] = []
        special: list[list[int]] = []
        truncated = 0
        for i, enc in enumerate(encs):
            mask = enc.special_tokens_mask
            if all(mask):
                # e.g. only control characters: nothing for MaxSim to score, and the pooled
                # vector would describe [CLS]/[SEP] alone.
                raise EmptyInputError(
                    f"text at index {offset + i} has no tokens after normalization: "
                    f"{texts[i]!r:.60}"
                )
            truncated += bool(enc.overflowing)
            ids.append(enc.ids)
            special.append(mask)
        return Tokenized(ids=ids, special=special, truncated=truncated)


@dataclass
class TruncationTally:
    """Truncations counted over several encode calls, to be reported in one warning."""

    count: int = 0
    total: int = 0
    max_length: int = 0

    def warn(self, stacklevel: int = 2) -> None:
        """One TruncationWarning with the totals, if any text was cut; ``stacklevel`` as
        for ``warnings.warn`` called where this is called."""
        _warn(self.count, self.total, self.max_length, stacklevel + 2)


_TALLY: ContextVar[TruncationTally | None] = ContextVar("pgembed_truncation_tally", default=None)


@contextlib.contextmanager
def collect_truncations() -> Iterator[TruncationTally]:
    """Count truncations instead of warning once per encode call (``Collection.add`` runs
    one encode per batch, and warns once per call with the totals: ``tally.warn()``)."""
    tally = TruncationTally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


def warn_truncated(count: int, total: int, max_length: int, stacklevel: int = 3) -> None:
    tally = _TALLY.get()
    if tally is not None:
        tally.count += count
        tally.total += total
        tally.max_length = max_length
        return
    _warn(count, total, max_length, stacklevel + 1)


def _warn(count: int, total: int, max_length: int, stacklevel: int) -> None:
    if count:
        warnings.warn(
            f"{count} of {total} texts were longer than max_length={max_length} tokens and "
            "were truncated",
            TruncationWarning,
            stacklevel=stacklevel,
        )


def plan_batches(lengths: Int64Array, token_budget: int, max_batch: int) -> list[Int64Array]:
    """Row indices per batch: longest first, each batch's padded size within the budget.

    Sorting by length keeps padding small; longest first makes the biggest batch the first
    one, so an out-of-memory shows up at once rather than at the end of a long run.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[Int64Array] = []
    start = 0
    n = len(order)
    while start < n:
        width = int(lengths[order[start]])  # the longest row of this batch
        size = max(1, min(max_batch, token_budget // max(width, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(ids: list[list[int]], rows: Int64Array, pad_id: int) -> tuple[Int64Array, Int64Array]:
    """(input_ids, attention_mask) for ``rows``, right-padded to the longest of them."""
    width = max(len(ids[r]) for r in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        seq = ids[r]
        input_ids[j, : len(seq)] = seq
        mask[j, : len(seq)] = 1
    return input_ids, mask

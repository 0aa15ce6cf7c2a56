"""Collection tables: which columns and indexes hold each vector kind.

A collection is an ordinary table. Its layout is fixed by :class:`CollectionSpec`, and the
SQL functions read the same facts back from ``pgembed.collections.kinds``:

- single: ``embedding halfvec(d)`` (or ``vector(d)``), HNSW cosine or inner product.
- matryoshka: no column; an HNSW index on ``subvector(embedding,1,m)::halfvec(m)`` per
  prefix m.
- binary: a hamming index on ``binary_quantize(embedding)::bit(d)`` (HNSW, or IVFFlat for
  an index about 14x smaller than a full-vector HNSW); with b > 1 bits per dimension also
  ``embedding_bits bit(b*d)``, levels in order, for rescoring.
- fde: ``fde halfvec(D)``; HNSW inner product when D <= 4000, else hamming on
  ``binary_quantize(fde)::bit(D)``.
- multivector: ``tokens halfvec(t)[]``, no index: MaxSim reranks candidates.
- lexical: ``lexemes tsvector``, a STORED generated column ``to_tsvector('<config>'::regconfig,
  coalesce(text, ''))`` (every write path keeps it exact), with a GIN index, and the table
  ``<table>_lexical_stats`` of exact BM25 statistics, kept by triggers (pgembed--0.4.0.sql).
  Needs the text column and a vector kind beside it.

Kinds imply others: matryoshka and binary search rerank on ``embedding`` (so they imply
single), and fde reranks with exact MaxSim on ``tokens`` (so it implies multivector).
Ids are ``bigint``. With a text column, ``embedded_hash`` holds md5(text) as embedded, so
``pgembed sync`` can find rows whose text is new or changed.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field
from typing import Any, Literal

from pgembed.errors import CollectionError, ConfigError, DimensionError
from pgembed.storage import names

# re-exported: callers import them from here
from pgembed.storage.names import MAX_IDENTIFIER_BYTES as MAX_IDENTIFIER_BYTES
from pgembed.storage.names import check_name as check_name

KINDS = ("single", "matryoshka", "binary", "fde", "multivector", "lexical")
_IMPLIES = {"matryoshka": "single", "binary": "single", "fde": "multivector"}


def with_implied(kind: str) -> tuple[str, ...]:
    """``kind`` and the kind it reranks on (matryoshka and binary: single; fde: multivector)."""
    return (kind, _IMPLIES[kind]) if kind in _IMPLIES else (kind,)


# pgvector's index limits, checked here so the error is ours and names the fix.
HNSW_MAX_DIMS = {"vector": 2000, "halfvec": 4000, "bit": 64000}
IVFFLAT_MAX_LISTS = 32768
_STORE_MAX_DIMS = {"vector": 16000, "halfvec": 16000}

# Columns pgembed adds to every collection table: the id and text columns must differ.
RESERVED_COLUMNS = ("embedded_hash", "embedding", "embedding_bits", "fde", "tokens", "lexemes")
# Index names are <base><suffix>; the longest suffix ("_embedding_bq_ivfflat",
# "_embedding_15999_hnsw") is 21 bytes, so a base of 40 bytes always fits.
_INDEX_BASE_BYTES = 40
LEXICAL_COLUMN = "lexemes"
"""The lexical kind's tsvector column."""

Precision = Literal["halfvec", "vector"]
Distance = Literal["cosine", "ip"]


@dataclass(frozen=True)
class IndexParams:
    """Index build parameters (pgvector's defaults)."""

    m: int = 16
    """HNSW: neighbours per node."""
    ef_construction: int = 64
    """HNSW: candidate list size while building."""
    binary: Literal["hnsw", "ivfflat"] = "hnsw"
    """Index of the binary code. HNSW takes inserts at any time. IVFFlat has no neighbour
    lists, so its index is about 14x smaller than a full-vector HNSW (benchmarks/search.py),
    but its lists are clustered when it is built: build it, or ``Collection.reindex()``,
    once the table holds representative data."""
    lists: int = 100
    """IVFFlat lists (pgvector's default). Between rows/1000 and rows/300 suits binary
    codes; searches probe ceil(sqrt(lists)) lists unless told ``probes``."""
    fde: Literal["bit", "halfvec"] = "bit"
    """Index of the FDE: HNSW on ``binary_quantize(fde)`` (searches take a Hamming pool of
    candidates x oversample, rescore it on the float FDE, then MaxSim), or HNSW on the
    halfvec FDE itself (D <= 4000 only). Measured on 6,000 MiniLM passages
    (benchmarks/fde_index.py): the bit index keeps the same recall of the exact MaxSim
    top-10 at the default arguments (0.939 vs 0.938) with an index 0.09x the size, built in
    0.14x the time, at 0.16x the insert cost per row; multivector queries take 1.4-2.2x as
    long. Collections created before 0.4.0 keep their halfvec index."""

    def __post_init__(self) -> None:
        if not 2 <= self.m <= 100:
            raise ConfigError(f"index m={self.m} is out of range; pgvector accepts 2..100")
        if not 4 <= self.ef_construction <= 1000 or self.ef_construction < 2 * self.m:
            raise ConfigError(
                f"index ef_construction={self.ef_construction} is out of range; pgvector "
                f"accepts 4..1000 and at least 2*m={2 * self.m}"
            )
        if self.binary not in ("hnsw", "ivfflat"):
            raise ConfigError(f"binary index {self.binary!r}: use 'hnsw' or 'ivfflat'")
        if self.fde not in ("bit", "halfvec"):
            raise ConfigError(f"fde index {self.fde!r}: use 'bit' or 'halfvec'")
        if not isinstance(self.lists, int) or not 1 <= self.lists <= IVFFLAT_MAX_LISTS:
            raise ConfigError(
                f"index lists={self.lists!r} is out of range; pgvector accepts "
                f"1..{IVFFLAT_MAX_LISTS} (rows/1000 to rows/300 suits binary codes, at "
                "least 1: lists=max(1, rows // 300))"
            )

    def with_(self) -> dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction}


def _integer(value: Any) -> int:
    """An int from an int-like value (numpy integers too); TypeError for bools and others."""
    if isinstance(value, bool):
        raise TypeError("bool")
    return operator.index(value)


def index_base(table_name: str) -> str:
    """Prefix of a collection's index names: the table name, or when that is too long for
    the index names to fit in 63 bytes, its first bytes plus a hash of the whole name, so
    that two tables sharing a long prefix still get distinct index names."""
    raw = table_name.encode("utf-8")
    if len(raw) <= _INDEX_BASE_BYTES:
        return table_name
    head = raw[: _INDEX_BASE_BYTES - 9].decode("utf-8", errors="ignore")
    return f"{head}_{hashlib.sha256(raw).hexdigest()[:8]}"


@dataclass(frozen=True)
class CollectionSpec:
    """Declares a collection: its table, encoder and the vector kinds it stores."""

    name: str
    """Collection name, the key in pgembed.collections; also the default table name."""
    dim: int
    """Dimension of the encoder's pooled and token vectors."""
    encoder: str
    """Encoder name in pgembed.encoders."""
    kinds: tuple[str, ...] = ("single",)
    """Requested kinds; implied kinds are added (see the module docstring)."""
    table: str | None = None
    """Table name; defaults to ``name``."""
    schema: str = "public"
    """Schema of the table."""
    id_column: str = "id"
    """bigint primary key column."""
    text_column: str | None = "content"
    """Text column, or None to store vectors only."""
    precision: Precision = "halfvec"
    """Storage type of ``embedding``: halfvec (half the bytes) or vector."""
    distance: Distance = "cosine"
    """Distance of the single-vector index."""
    matryoshka_dims: tuple[int, ...] = ()
    """Prefix lengths m that get an index; required with the matryoshka kind."""
    binary_bits: int = 1
    """Bits per dimension of the binary code (1: the expression index only)."""
    fde_dim: int | None = None
    """Output dimension D of the FDE config; required with the fde kind."""
    index: IndexParams = field(default_factory=IndexParams)
    """Build parameters of the collection's indexes."""
    lexical_config: str = "english"
    """Text search configuration of the lexical kind: a name in pg_catalog (``english``,
    ``simple``...) or schema-qualified (``myschema.MyConfig``), names as they are (case
    kept), checked against pg_ts_config when the collection is created. The catalog holds
    it spelled for ``::regconfig`` (storage/names.py: quoted where needed)."""

    def __post_init__(self) -> None:
        check_name(self.name, "collection name")
        for what, value in (
            ("table name", self.table_name),
            ("schema name", self.schema),
            ("id column", self.id_column),
        ):
            check_name(value, what)
        if self.id_column in RESERVED_COLUMNS:
            raise CollectionError(
                f"id column {self.id_column!r} is a column pgembed adds itself "
                f"({', '.join(RESERVED_COLUMNS)}); choose another id_column"
            )
        if self.text_column is not None:
            check_name(self.text_column, "text column")
            if self.text_column in (self.id_column, *RESERVED_COLUMNS):
                raise CollectionError(
                    f"text column {self.text_column!r} collides with the id column or a "
                    f"column pgembed adds ({self.id_column}, {', '.join(RESERVED_COLUMNS)}); "
                    "choose another text_column (or None to store vectors only)"
                )
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise CollectionError(f"unknown kind(s) {unknown}; choose from {list(KINDS)}")
        if not self.kinds:
            raise CollectionError(f"a collection needs at least one kind of {list(KINDS)}")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise DimensionError(f"dim must be a positive integer, got {self.dim!r}")
        if self.precision not in ("halfvec", "vector"):
            raise ConfigError(f"precision {self.precision!r}: use 'halfvec' or 'vector'")
        if self.distance not in ("cosine", "ip"):
            raise ConfigError(f"distance {self.distance!r}: use 'cosine' or 'ip'")
        if self.has("single") and self.dim > HNSW_MAX_DIMS[self.precision]:
            raise DimensionError(
                f"dim {self.dim} exceeds pgvector's HNSW limit of "
                f"{HNSW_MAX_DIMS[self.precision]} for {self.precision}; use precision="
                f"'halfvec' (limit 4000) or a smaller model"
            )
        if self.has("matryoshka"):
            self._check_matryoshka()
        if self.has("binary") and (
            not isinstance(self.binary_bits, int)
            or isinstance(self.binary_bits, bool)
            or not 1 <= self.binary_bits <= 8
        ):
            raise ConfigError(f"binary_bits={self.binary_bits!r} must be an integer in 1..8")
        if self.has("lexical"):
            self._check_lexical()
        if self.has("fde"):
            if self.fde_dim is None or self.fde_dim < 1:
                raise ConfigError("the fde kind needs fde_dim, the FDE config's output dimension")
            if self.fde_dim > _STORE_MAX_DIMS["halfvec"]:
                raise DimensionError(
                    f"fde_dim {self.fde_dim} exceeds halfvec's 16000; "
                    "set final_projection_dimension in the FDE config"
                )

    def _check_lexical(self) -> None:
        if self.text_column is None:
            raise CollectionError(
                f"collection {self.name!r}: the lexical kind indexes the text column, but "
                "text_column is None; give the collection a text column (text_column="
                "'content') or leave lexical out"
            )
        if not set(self.all_kinds) - {"lexical"}:
            raise CollectionError(
                f"collection {self.name!r}: the lexical kind is stored beside a vector kind; "
                "add one, e.g. kinds=('single', 'lexical')"
            )
        cfg = self.lexical_config
        if not isinstance(cfg, str) or not cfg or "\x00" in cfg or cfg.count(".") > 1:
            raise ConfigError(
                f"lexical_config {cfg!r}: name a text search configuration, e.g. 'english', "
                "'simple' or 'myschema.myconfig' (names as they are, case-sensitive; a "
                "schema or configuration whose name holds a dot cannot be named: rename it)"
            )
        for part in cfg.split("."):
            check_name(part, "text search configuration name")

    def _check_matryoshka(self) -> None:
        try:
            dims = tuple(_integer(m) for m in self.matryoshka_dims)
        except TypeError:
            raise ConfigError(
                f"matryoshka_dims {list(self.matryoshka_dims)!r} must be integers, e.g. (64, 128)"
            ) from None
        if not dims or any(not 1 <= m < self.dim for m in dims):
            raise DimensionError(
                f"matryoshka_dims {list(dims)} must be non-empty, each in 1..{self.dim - 1}"
            )
        if len(set(dims)) != len(dims):
            raise ConfigError(
                f"matryoshka_dims {list(dims)} repeats a prefix; give each prefix once, "
                f"e.g. {sorted(set(dims))}"
            )
        # One order everywhere (the catalog stores them sorted): compare equal when re-read.
        object.__setattr__(self, "matryoshka_dims", tuple(sorted(dims)))

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def all_kinds(self) -> tuple[str, ...]:
        wanted = set(self.kinds)
        wanted.update(_IMPLIES[k] for k in self.kinds if k in _IMPLIES)
        return tuple(k for k in KINDS if k in wanted)

    def has(self, kind: str) -> bool:
        return kind in self.all_kinds

    @property
    def fde_index(self) -> Literal["halfvec", "bit"]:
        assert self.fde_dim is not None
        fits = self.fde_dim <= HNSW_MAX_DIMS["halfvec"]
        return "halfvec" if self.index.fde == "halfvec" and fits else "bit"

    def vector_columns(self) -> tuple[str, ...]:
        """The columns holding this collection's vectors, in table order."""
        wanted = {
            "embedding": self.has("single"),
            "embedding_bits": self.has("binary") and self.binary_bits > 1,
            "fde": self.has("fde"),
            "tokens": self.has("multivector"),
        }
        return tuple(c for c, on in wanted.items() if on)

    def kinds_json(self) -> dict[str, Any]:
        """The description stored in pgembed.collections.kinds, read by the SQL functions."""
        out: dict[str, Any] = {}
        if self.has("single"):
            out["single"] = {
                "column": "embedding",
                "type": self.precision,
                "dim": self.dim,
                "distance": self.distance,
            }
        if self.has("matryoshka"):
            out["matryoshka"] = {"dims": sorted(self.matryoshka_dims)}
        if self.has("binary"):
            out["binary"] = {
                "bits": self.binary_bits,
                "column": "embedding_bits" if self.binary_bits > 1 else None,
                "index": self.index.binary,
            }
            if self.index.binary == "ivfflat":
                out["binary"]["lists"] = self.index.lists
        if self.has("fde"):
            out["fde"] = {"column": "fde", "dim": self.fde_dim, "index": self.fde_index}
        if self.has("multivector"):
            out["multivector"] = {"column": "tokens", "dim": self.dim}
        if self.has("lexical"):
            out["lexical"] = {
                "column": LEXICAL_COLUMN,
                "config": names.ts_config_sql(self.lexical_config),
                "stats": self.lexical_stats_table,
            }
        return out

    @property
    def lexical_stats_table(self) -> str:
        """The lexical kind's statistics table, in the collection's schema."""
        return f"{index_base(self.table_name)}_lexical_stats"

    def to_catalog(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table_schema": self.schema,
            "table_name": self.table_name,
            "id_column": self.id_column,
            "text_column": self.text_column,
            "encoder": self.encoder,
            "kinds": self.kinds_json(),
        }

    @classmethod
    def from_catalog(cls, row: Any) -> CollectionSpec:
        """Rebuild the spec from a pgembed.collections row (mapping)."""
        kinds = row["kinds"]
        single = kinds.get("single", {})
        binary = kinds.get("binary", {})
        return cls(
            name=row["name"],
            dim=int(single.get("dim") or kinds["multivector"]["dim"]),
            encoder=row["encoder"],
            kinds=tuple(kinds),
            table=row["table_name"],
            schema=row["table_schema"],
            id_column=row["id_column"],
            text_column=row["text_column"],
            precision=single.get("type", "halfvec"),
            distance=single.get("distance", "cosine"),
            matryoshka_dims=tuple(kinds.get("matryoshka", {}).get("dims", ())),
            binary_bits=int(binary.get("bits", 1)),
            fde_dim=kinds.get("fde", {}).get("dim"),
            lexical_config=names.ts_config_from_sql(
                kinds.get("lexical", {}).get("config", "english")
            ),
            index=IndexParams(
                binary=binary.get("index", IndexParams.binary),
                lists=binary.get("lists", IndexParams.lists),
                # an FDE row written before 0.4.0 without an index name has the halfvec one
                fde=kinds["fde"].get("index", "halfvec") if "fde" in kinds else IndexParams.fde,
            ),
        )


def _ops(kind_type: str, distance: str) -> str:
    suffix = "cosine_ops" if distance == "cosine" else "ip_ops"
    return f"{kind_type}_{suffix}"


def table(spec: CollectionSpec, metadata: Any | None = None) -> Any:
    """The collection as a SQLAlchemy Table, with every index of its kinds."""
    import sqlalchemy as sa
    from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR

    from pgembed.storage.columns import MultiVector

    md = metadata if metadata is not None else sa.MetaData()
    cols: list[Any] = [
        sa.Column(spec.id_column, sa.BigInteger, primary_key=True, autoincrement=False)
    ]
    if spec.text_column is not None:
        cols.append(sa.Column(spec.text_column, sa.Text))
        cols.append(sa.Column("embedded_hash", sa.Text))
    vec_type = HALFVEC if spec.precision == "halfvec" else VECTOR
    if spec.has("single"):
        cols.append(sa.Column("embedding", vec_type(spec.dim), info={"kind": "single"}))
    if spec.has("binary") and spec.binary_bits > 1:
        bits = BIT(spec.binary_bits * spec.dim)
        cols.append(sa.Column("embedding_bits", bits, info={"kind": "binary"}))
    if spec.has("fde"):
        cols.append(sa.Column("fde", HALFVEC(spec.fde_dim), info={"kind": "fde"}))
    if spec.has("multivector"):
        cols.append(sa.Column("tokens", MultiVector(spec.dim), info={"kind": "multivector"}))
    if spec.has("lexical"):
        cols.append(lexical_column(spec))
    t = sa.Table(spec.table_name, md, *cols, schema=spec.schema)

    base = index_base(spec.table_name)
    hnsw: dict[str, Any] = {"postgresql_using": "hnsw", "postgresql_with": spec.index.with_()}
    # info["kind"]: which kind an index (or column) serves, for stats, sizes and autogenerate.
    if spec.has("single"):
        sa.Index(
            f"{base}_embedding_hnsw",
            t.c.embedding,
            postgresql_ops={"embedding": _ops(spec.precision, spec.distance)},
            info={"kind": "single"},
            **hnsw,
        )
    for m in spec.matryoshka_dims if spec.has("matryoshka") else ():
        label = f"embedding_{m}"
        expr = sa.cast(sa.func.subvector(t.c.embedding, 1, m), vec_type(m)).label(label)
        sa.Index(
            f"{base}_embedding_{m}_hnsw",
            expr,
            postgresql_ops={label: _ops(spec.precision, "cosine")},
            info={"kind": "matryoshka"},
            **hnsw,
        )
    if spec.has("binary"):
        expr = sa.cast(sa.func.binary_quantize(t.c.embedding), BIT(spec.dim)).label("embedding_bq")
        ops = {"embedding_bq": "bit_hamming_ops"}
        info = {"kind": "binary"}
        if spec.index.binary == "ivfflat":
            ivf: dict[str, Any] = {
                "postgresql_using": "ivfflat",
                "postgresql_with": {"lists": spec.index.lists},
            }
            sa.Index(f"{base}_embedding_bq_ivfflat", expr, postgresql_ops=ops, info=info, **ivf)
        else:
            sa.Index(f"{base}_embedding_bq_hnsw", expr, postgresql_ops=ops, info=info, **hnsw)
    if spec.has("fde"):
        if spec.fde_index == "halfvec":
            sa.Index(
                f"{base}_fde_hnsw",
                t.c.fde,
                postgresql_ops={"fde": "halfvec_ip_ops"},
                info={"kind": "fde"},
                **hnsw,
            )
        else:
            expr = sa.cast(sa.func.binary_quantize(t.c.fde), BIT(spec.fde_dim)).label("fde_bq")
            sa.Index(
                f"{base}_fde_bq_hnsw",
                expr,
                postgresql_ops={"fde_bq": "bit_hamming_ops"},
                info={"kind": "fde"},
                **hnsw,
            )
    if spec.has("lexical"):
        sa.Index(
            f"{base}_{LEXICAL_COLUMN}_gin",
            t.c[LEXICAL_COLUMN],
            postgresql_using="gin",
            info={"kind": "lexical"},
        )
    return t


def lexical_column(spec: CollectionSpec) -> Any:
    """``lexemes tsvector GENERATED ALWAYS AS (to_tsvector(CAST('<config>' AS
    pg_catalog.regconfig), coalesce(<text>, ''))) STORED``: the configuration is rendered as
    a literal (DDL takes no parameters) spelled by names.ts_config_sql, so the cast reads
    back the configuration named; PostgreSQL stores it by oid."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR

    assert spec.text_column is not None
    expr = sa.func.to_tsvector(
        sa.cast(sa.literal(names.ts_config_sql(spec.lexical_config), sa.Text), REGCONFIG),
        sa.func.coalesce(sa.column(spec.text_column, sa.Text), sa.literal("", sa.Text)),
    )
    return sa.Column(
        LEXICAL_COLUMN, TSVECTOR, sa.Computed(expr, persisted=True), info={"kind": "lexical"}
    )

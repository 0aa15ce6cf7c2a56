/*
 * pgembed_scoring.maxsim(halfvec[], halfvec[]) and (vector[], vector[]).
 *
 * maxsim(q, d) = sum over query tokens i of max over document tokens j of <q_i, d_j>,
 * each dot product in float32 (as pgvector's <#>), the sum in float8.
 *
 * Checks, in the order and with the messages and SQLSTATEs of pgembed's SQL maxsim:
 * an empty query (22023); then the first bad token, query tokens before document tokens,
 * each side in array order (1-based): NULL (22004), or a dimension other than query
 * token 1's (22000). An empty document gives NULL. Tokens whose stored size disagrees
 * with their dimension count (never produced by pgvector) are refused as corrupted.
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

#include "pgembed_scoring.h"

/* pgvector's on-disk layout of vector and halfvec (its vector.h / halfvec.h) */
typedef struct TokenHeader
{
	int32		vl_len_;		/* varlena header */
	int16		dim;
	int16		unused;
} TokenHeader;

#define TOKEN_DATA(t) ((const char *) (t) + sizeof(TokenHeader))

typedef struct ElemTypeCache
{
	Oid			elemtype;
	int16		typlen;
	bool		typbyval;
	char		typalign;
} ElemTypeCache;

typedef struct Tokens
{
	int			n;
	const TokenHeader **tok;	/* n detoasted tokens */
} Tokens;

static void
deconstruct_tokens(FunctionCallInfo fcinfo, ArrayType *arr, const char *side,
				   int elem_size, int *dim0, Tokens *out)
{
	ElemTypeCache *cache = (ElemTypeCache *) fcinfo->flinfo->fn_extra;
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	if (cache == NULL || cache->elemtype != ARR_ELEMTYPE(arr))
	{
		if (cache == NULL)
			cache = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(ElemTypeCache));
		cache->elemtype = ARR_ELEMTYPE(arr);
		get_typlenbyvalalign(cache->elemtype, &cache->typlen, &cache->typbyval,
							 &cache->typalign);
		fcinfo->flinfo->fn_extra = cache;
	}
	if (cache->typlen != -1 || cache->typbyval)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("pgembed.maxsim: %s token array is not of a pgvector type", side)));

	deconstruct_array(arr, cache->elemtype, cache->typlen, cache->typbyval, cache->typalign,
					  &elems, &nulls, &n);
	out->n = n;
	out->tok = palloc(sizeof(TokenHeader *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		const TokenHeader *t;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("pgembed.maxsim: %s token vector %d is NULL", side, i + 1),
					 errhint("remove the NULL elements from the token arrays")));
		t = (const TokenHeader *) PG_DETOAST_DATUM(elems[i]);
		if (t->dim < 1 || VARSIZE(t) != sizeof(TokenHeader) + (Size) elem_size * t->dim)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("pgembed.maxsim: %s token vector %d is malformed: %d dimensions in %u bytes",
							side, i + 1, (int) t->dim, (unsigned int) VARSIZE(t))));
		if (*dim0 < 0)
			*dim0 = t->dim;
		else if (t->dim != *dim0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("pgembed.maxsim: %s token vector %d has %d dimensions; query token vector 1 has %d",
							side, i + 1, (int) t->dim, *dim0),
					 errhint("encode the query and the documents with the same encoder")));
		out->tok[i] = t;
	}
	pfree(elems);
	pfree(nulls);
}

/* dst (dim floats) = the token's values */
static inline void
token_to_float(const PgembedKernels *kernels, const TokenHeader *t, bool half, float *dst)
{
	if (half)
		kernels->half_to_float((const uint16 *) TOKEN_DATA(t), dst, t->dim);
	else
		memcpy(dst, TOKEN_DATA(t), sizeof(float) * t->dim);
}

static Datum
maxsim_common(FunctionCallInfo fcinfo, bool half)
{
	ArrayType  *qa = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *da = PG_GETARG_ARRAYTYPE_P(1);
	const PgembedKernels *kernels = pgembed_kernels();
	int			elem_size = half ? sizeof(uint16) : sizeof(float);
	int			dim = -1;
	Tokens		qt,
				dt;
	float	   *q,
			   *best,
			   *chunk,
			   *row;
	double		sum = 0.0;
	int			i,
				j0;

	if (ArrayGetNItems(ARR_NDIM(qa), ARR_DIMS(qa)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgembed.maxsim: the query has no token vectors"),
				 errhint("MaxSim needs at least one query token vector")));
	deconstruct_tokens(fcinfo, qa, "query", elem_size, &dim, &qt);
	deconstruct_tokens(fcinfo, da, "document", elem_size, &dim, &dt);
	if (dt.n == 0)
		PG_RETURN_NULL();

	/* the query as a row-major float matrix (may exceed 1 GB for huge arrays) */
	q = palloc_extended(sizeof(float) * (Size) qt.n * dim, MCXT_ALLOC_HUGE);
	for (i = 0; i < qt.n; i++)
		token_to_float(kernels, qt.tok[i], half, q + (Size) i * dim);
	best = palloc(sizeof(float) * qt.n);
	for (i = 0; i < qt.n; i++)
		best[i] = -INFINITY;

	/* the document, PGEMBED_CHUNK_DOCS tokens at a time, transposed and zero-padded */
	chunk = palloc(sizeof(float) * (Size) dim * PGEMBED_CHUNK_DOCS);
	row = palloc(sizeof(float) * dim);
	for (j0 = 0; j0 < dt.n; j0 += PGEMBED_CHUNK_DOCS)
	{
		int			nd = Min(PGEMBED_CHUNK_DOCS, dt.n - j0);
		int			ld = (nd + PGEMBED_BLOCK_DOCS - 1) / PGEMBED_BLOCK_DOCS * PGEMBED_BLOCK_DOCS;
		int			j,
					k;

		CHECK_FOR_INTERRUPTS();
		for (j = 0; j < nd; j++)
		{
			token_to_float(kernels, dt.tok[j0 + j], half, row);
			for (k = 0; k < dim; k++)
				chunk[(Size) k * ld + j] = row[k];
		}
		for (; j < ld; j++)
			for (k = 0; k < dim; k++)
				chunk[(Size) k * ld + j] = 0.0f;
		kernels->maxsim(q, qt.n, dim, chunk, nd, ld, best);
	}

	for (i = 0; i < qt.n; i++)
		sum += (double) best[i];

	pfree(row);
	pfree(chunk);
	pfree(best);
	pfree(q);
	PG_FREE_IF_COPY(qa, 0);
	PG_FREE_IF_COPY(da, 1);
	PG_RETURN_FLOAT8(sum);
}

PG_FUNCTION_INFO_V1(pgembed_scoring_maxsim_halfvec);

Datum
pgembed_scoring_maxsim_halfvec(PG_FUNCTION_ARGS)
{
	return maxsim_common(fcinfo, true);
}

PG_FUNCTION_INFO_V1(pgembed_scoring_maxsim_vector);

Datum
pgembed_scoring_maxsim_vector(PG_FUNCTION_ARGS)
{
	return maxsim_common(fcinfo, false);
}

/*
 * The query FDE (MUVERA) of a token set, from an FDE config's stored matrices, in C:
 *
 * fde_query(q vector[], num_repetitions, num_simhash_projections, projection_dimension,
 *           output_dimension int, simhash real[], ams_index int[], ams_sign real[],
 *           final_index int[], final_sign real[]) vector
 *
 * The arithmetic of pgembed's PL/pgSQL fde_query(config, q), which stays the one that
 * reads pgembed.fde_configs: the wired pgembed.fde_query looks the config up in SQL and
 * hands its arrays here, so this function reads no table (IMMUTABLE). Per repetition r:
 *
 * 1. SimHash: bit b_j = <token, simhash[r, :, j]> > 0 (float4 dot products, as pgvector's
 *    <#>), the bits read as a Gray code: partition p = sum_j (b_0 xor .. xor b_j) 2^(k-1-j).
 * 2. Tokens SUMmed per (r, p) block in float4 (pgvector's sum(vector)); never filled.
 * 3. AMS projection: projected[t] = sum over j with ams_index[r, j] = t of
 *    ams_sign[r, j] * block[j] (float4), or the block itself when ams_index is NULL.
 * 4. Element (r * 2^k + p) * d_proj + t; an optional final count sketch adds
 *    final_sign[i] * fde[i] into out[final_index[i]] in float8, then rounds to float4.
 *
 * Empty blocks stay 0. simhash is flattened (R, d, k) row-major, ams_index/ams_sign
 * (R, d), final_index/final_sign (R * 2^k * d_proj), all 0-based, as pgembed.fde_configs
 * stores them (pgembed.vectors.fde).
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/float.h"
#include "utils/lsyscache.h"

#include "pgembed_scoring.h"

#define VECTOR_MAX_DIM 16000	/* pgvector's */
#define MAX_SIMHASH 16			/* 65536 partitions per repetition */
#define MAX_INTERMEDIATE (1 << 26)	/* R * 2^k * d_proj, and R * 2^k * d */

#define FDE_ERROR(code, ...) \
	ereport(ERROR, (errcode(code), errmsg("pgembed_scoring.fde_query: " __VA_ARGS__)))

/*
 * The elements of a one-dimensional real[] or integer[] argument (4 bytes each, elemtype)
 * in place, checked to be `want` long without NULLs; NULL for an SQL NULL.
 */
static const void *
plain_array(FunctionCallInfo fcinfo, int argno, Oid elemtype, const char *name, int64 want)
{
	ArrayType  *arr;
	int			n,
				i;

	if (PG_ARGISNULL(argno))
		return NULL;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_ELEMTYPE(arr) != elemtype)
		FDE_ERROR(ERRCODE_DATATYPE_MISMATCH, "%s has the wrong element type", name);
	if (ARR_NDIM(arr) > 1)
		FDE_ERROR(ERRCODE_ARRAY_SUBSCRIPT_ERROR, "%s must be a one-dimensional array", name);
	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (n != want)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("pgembed_scoring.fde_query: %s has %d elements; the config needs %lld",
						name, n, (long long) want),
				 errhint("pass the arrays of one row of pgembed.fde_configs")));
	if (ARR_HASNULL(arr))
		for (i = 0; i < n; i++)
			if (!(ARR_NULLBITMAP(arr)[i / 8] & (1 << (i % 8))))	/* bit clear: NULL */
				FDE_ERROR(ERRCODE_NULL_VALUE_NOT_ALLOWED, "%s element %d is NULL", name, i + 1);
	/* no NULLs: n packed 4-byte values (after a null bitmap, if it has one: ARR_DATA_PTR) */
	return (const char *) arr + (ARR_HASNULL(arr) ? (Size) arr->dataoffset :
								 ARR_OVERHEAD_NONULLS(ARR_NDIM(arr)));
}

/* <a, b> over n floats in float4, eight partial sums (which the compiler vectorizes) */
static inline float
dot4(const float *a, const float *b, int n)
{
	float		acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	float		sum;
	int			j = 0,
				l;

	for (; j + 8 <= n; j += 8)
		for (l = 0; l < 8; l++)
			acc[l] += a[j + l] * b[j + l];
	sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
	for (; j < n; j++)
		sum += a[j] * b[j];
	return sum;
}

static int32
int_arg(FunctionCallInfo fcinfo, int argno, const char *name, int32 low, int32 high)
{
	int32		v;

	if (PG_ARGISNULL(argno))
		FDE_ERROR(ERRCODE_NULL_VALUE_NOT_ALLOWED, "%s is NULL", name);
	v = PG_GETARG_INT32(argno);
	if (v < low || v > high)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgembed_scoring.fde_query: %s must be in %d..%d, got %d",
						name, low, high, v)));
	return v;
}

/* the query tokens: n detoasted vectors of one dimension, *dim set */
static const VectorHeader **
query_tokens(FunctionCallInfo fcinfo, int *ntok, int *dim)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	const VectorHeader **tok;
	Datum	   *elems;
	bool	   *nulls;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n,
				i;

	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	if (typlen != -1 || typbyval)
		FDE_ERROR(ERRCODE_DATATYPE_MISMATCH, "the query is not an array of vector");
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgembed_scoring.fde_query: the query has no token vectors"),
				 errhint("a multi-vector query needs at least one token vector")));
	tok = palloc(sizeof(VectorHeader *) * n);
	*dim = -1;
	for (i = 0; i < n; i++)
	{
		const VectorHeader *t;

		if (nulls[i])
			FDE_ERROR(ERRCODE_NULL_VALUE_NOT_ALLOWED, "query token vector %d is NULL", i + 1);
		t = (const VectorHeader *) PG_DETOAST_DATUM(elems[i]);
		if (t->dim < 1 || VARSIZE(t) != offsetof(VectorHeader, x) + sizeof(float) * (Size) t->dim)
			FDE_ERROR(ERRCODE_DATA_CORRUPTED,
					  "query token vector %d is malformed: %d dimensions in %u bytes",
					  i + 1, (int) t->dim, (unsigned int) VARSIZE(t));
		if (*dim < 0)
			*dim = t->dim;
		else if (t->dim != *dim)
			FDE_ERROR(ERRCODE_DATA_EXCEPTION,
					  "query token vector %d has %d dimensions; token vector 1 has %d",
					  i + 1, (int) t->dim, *dim);
		tok[i] = t;
	}
	*ntok = n;
	return tok;
}

PG_FUNCTION_INFO_V1(pgembed_scoring_fde_query);

Datum
pgembed_scoring_fde_query(PG_FUNCTION_ARGS)
{
	const VectorHeader **tok;
	int			ntok,
				d,
				r,
				k,
				dp,
				dout,
				nb,
				rep,
				i,
				j;
	int64		inter;
	const float *simhash,
			   *ams_s,
			   *final_sign;
	const int32 *ams_t,
			   *final_index;
	float	   *sh = NULL,
			   *blocks;
	bool	   *filled;
	double	   *out;
	float	   *proj;
	VectorHeader *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	tok = query_tokens(fcinfo, &ntok, &d);
	r = int_arg(fcinfo, 1, "num_repetitions", 1, 100000);
	k = int_arg(fcinfo, 2, "num_simhash_projections", 0, MAX_SIMHASH);
	dp = int_arg(fcinfo, 3, "projection_dimension", 1, 100000);
	dout = int_arg(fcinfo, 4, "output_dimension", 1, VECTOR_MAX_DIM);
	nb = 1 << k;
	inter = (int64) r * nb * Max(dp, d);
	if (inter > MAX_INTERMEDIATE)
		FDE_ERROR(ERRCODE_PROGRAM_LIMIT_EXCEEDED,
				  "%d repetitions x %d partitions x %d dimensions is too large",
				  r, nb, Max(dp, d));
	inter = (int64) r * nb * dp;

	/* k = 0: one partition, simhash unused */
	simhash = k > 0 ? plain_array(fcinfo, 5, FLOAT4OID, "simhash", (int64) r * d * k) : NULL;
	if (k > 0 && simhash == NULL)
		FDE_ERROR(ERRCODE_NULL_VALUE_NOT_ALLOWED, "simhash is NULL with %d SimHash projections", k);
	if (PG_ARGISNULL(6) != PG_ARGISNULL(7))
		FDE_ERROR(ERRCODE_INVALID_PARAMETER_VALUE, "ams_index and ams_sign must both be given or both NULL");
	ams_t = plain_array(fcinfo, 6, INT4OID, "ams_index", (int64) r * d);
	ams_s = plain_array(fcinfo, 7, FLOAT4OID, "ams_sign", (int64) r * d);
	if (ams_t == NULL && dp != d)
		FDE_ERROR(ERRCODE_INVALID_PARAMETER_VALUE,
				  "without an AMS sketch projection_dimension must equal the token dimension %d, got %d",
				  d, dp);
	if (PG_ARGISNULL(8) != PG_ARGISNULL(9))
		FDE_ERROR(ERRCODE_INVALID_PARAMETER_VALUE, "final_index and final_sign must both be given or both NULL");
	final_index = plain_array(fcinfo, 8, INT4OID, "final_index", inter);
	final_sign = plain_array(fcinfo, 9, FLOAT4OID, "final_sign", inter);
	if (final_index == NULL && inter != dout)
		FDE_ERROR(ERRCODE_INVALID_PARAMETER_VALUE,
				  "without a final projection output_dimension must be %lld (repetitions x partitions x projection_dimension), got %d",
				  (long long) inter, dout);

	/* simhash (R, d, k) transposed to (R, k, d): each SimHash dot product is contiguous */
	if (simhash != NULL)
	{
		sh = palloc(sizeof(float) * (Size) r * d * k);
		for (rep = 0; rep < r; rep++)
			for (j = 0; j < d; j++)
				for (i = 0; i < k; i++)
					sh[((Size) rep * k + i) * d + j] = simhash[((Size) rep * d + j) * k + i];
	}
	if (ams_t != NULL)
		for (i = 0; i < r * d; i++)
			if (ams_t[i] < 0 || ams_t[i] >= dp)
				FDE_ERROR(ERRCODE_INVALID_PARAMETER_VALUE,
						  "ams_index element %d is %d, outside 0..%d", i + 1, ams_t[i], dp - 1);

	/* 1-2: every token into its block of every repetition */
	blocks = palloc0(sizeof(float) * (Size) r * nb * d);
	filled = palloc0(sizeof(bool) * (Size) r * nb);
	for (i = 0; i < ntok; i++)
	{
		const float *x = tok[i]->x;

		CHECK_FOR_INTERRUPTS();
		for (rep = 0; rep < r; rep++)
		{
			int			code = 0,
						p,
						b;
			float	   *blk;

			for (b = 0; b < k; b++)
				code = (code << 1) | (dot4(x, sh + ((Size) rep * k + b) * d, d) > 0.0f);
			/* Gray decode: p's bit j (from the top) is the xor of code's bits 0..j */
			p = code;
			for (b = 1; b < k; b <<= 1)
				p ^= p >> b;
			blk = blocks + ((Size) rep * nb + p) * d;
			filled[rep * nb + p] = true;
			for (j = 0; j < d; j++)
				blk[j] += x[j];
		}
	}
	/* pgvector's sum(vector) raises on overflow; an infinite sum stays non-finite */
	for (i = 0; i < r * nb * d; i++)
		if (unlikely(!isfinite(blocks[i])))
			float_overflow_error();

	/* 3-4: project each filled block, place it (or count-sketch it) in the output */
	out = palloc0(sizeof(double) * dout);
	proj = palloc(sizeof(float) * dp);
	for (rep = 0; rep < r; rep++)
	{
		int			p;

		for (p = 0; p < nb; p++)
		{
			const float *blk = blocks + ((Size) rep * nb + p) * d;
			int64		base = ((int64) rep * nb + p) * dp;
			int			t;

			if (!filled[rep * nb + p])
				continue;
			if (ams_t != NULL)
			{
				memset(proj, 0, sizeof(float) * dp);
				for (j = 0; j < d; j++)
					proj[ams_t[rep * d + j]] += ams_s[rep * d + j] * blk[j];
			}
			else
				memcpy(proj, blk, sizeof(float) * d);
			for (t = 0; t < dp; t++)
			{
				if (final_index != NULL)
				{
					int32		at = final_index[base + t];

					if (at < 0 || at >= dout)
						FDE_ERROR(ERRCODE_INVALID_PARAMETER_VALUE,
								  "final_index element %lld is %d, outside 0..%d",
								  (long long) (base + t + 1), at, dout - 1);
					out[at] += (double) final_sign[base + t] * (double) proj[t];
				}
				else
					out[base + t] = (double) proj[t];
			}
		}
	}

	result = palloc0(offsetof(VectorHeader, x) + sizeof(float) * dout);
	SET_VARSIZE(result, offsetof(VectorHeader, x) + sizeof(float) * dout);
	result->dim = dout;
	for (i = 0; i < dout; i++)
	{
		result->x[i] = (float) out[i];
		/* the SQL version's real[] and vector casts refuse these */
		if (unlikely(isinf(result->x[i]) || isnan(result->x[i])))
			float_overflow_error();
	}
	PG_RETURN_POINTER(result);
}

/*
 * Multi-bit residual binary codes (pgembed.vectors.binary's residual codes), in C:
 *
 * residual_levels(q vector, bits int, OUT codes bit varying[], OUT scales float8[])
 *   the b-level residual sign code of q and the scale of each level, as pgembed's
 *   PL/pgSQL residual_levels computes them: in float8, level l's scale the mean |residual|
 *   rounded to float4 (so it errors as PostgreSQL's float8-to-float4 cast does), its bit i
 *   set where residual[i] > 0, then residual -= +-scale.
 *
 * residual_similarity(codes bit varying[], scales float8[], doc bit varying) float8
 *   sum over query levels i, j of s_i s_j (len - 2 hamming(codes[i], level j of doc)),
 *   level j of doc being its bits j*len .. (j+1)*len - 1 (len = the query levels' length):
 *   pgembed's SQL residual_similarity, which search_binary calls once per candidate.
 *
 * The arithmetic is PostgreSQL's float8 operators (float8_mul, float8_pl), so overflow and
 * underflow raise the errors the SQL version raises. The SQL residual_similarity turns
 * malformed input into NULL terms or pgvector's raw error; this one says what is wrong: NULL levels or scales, levels of different lengths,
 * fewer scales than levels, a document shorter than its levels, or arrays of more than
 * one dimension. On well-formed input both give the same number (the float8 sum in
 * another order).
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/float.h"
#include "utils/varbit.h"

#include "pgembed_scoring.h"

#define MAX_RESIDUAL_BITS 16

/* --- residual_levels ------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(pgembed_scoring_residual_levels);

Datum
pgembed_scoring_residual_levels(PG_FUNCTION_ARGS)
{
	VectorHeader *q = (VectorHeader *) PG_DETOAST_DATUM(PG_GETARG_DATUM(0));
	int32		bits = PG_GETARG_INT32(1);
	int			dim = q->dim;
	TupleDesc	tupdesc;
	Datum	   *codes,
			   *scales,
				values[2];
	bool		nulls[2] = {false, false};
	double	   *x;
	int			level,
				i;

	/* the message of pgembed.check_range, which the PL/pgSQL version calls */
	if (bits < 1 || bits > MAX_RESIDUAL_BITS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgembed: bits must be an integer in 1..%d, got %d",
						MAX_RESIDUAL_BITS, bits),
				 errhint("pass bits between 1 and %d", MAX_RESIDUAL_BITS)));
	if (dim < 1 || VARSIZE(q) != offsetof(VectorHeader, x) + sizeof(float) * (Size) dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("pgembed_scoring.residual_levels: the query vector is malformed: %d dimensions in %u bytes",
						dim, (unsigned int) VARSIZE(q))));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE || tupdesc->natts != 2)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pgembed_scoring.residual_levels must be declared with OUT codes bit varying[], OUT scales double precision[]")));
	tupdesc = BlessTupleDesc(tupdesc);

	x = palloc(sizeof(double) * dim);
	for (i = 0; i < dim; i++)
		x[i] = (double) q->x[i];
	codes = palloc(sizeof(Datum) * bits);
	scales = palloc(sizeof(Datum) * bits);
	for (level = 0; level < bits; level++)
	{
		VarBit	   *code = palloc0(VARBITTOTALLEN(dim));
		double		sum = 0.0,
					mean,
					scale;
		float		rounded;

		SET_VARSIZE(code, VARBITTOTALLEN(dim));
		VARBITLEN(code) = dim;
		/* avg(abs(v)) over float8 adds in order, then divides */
		for (i = 0; i < dim; i++)
			sum += fabs(x[i]);
		mean = sum / dim;
		/* ::real::double precision, with the cast's range errors */
		rounded = (float) mean;
		if (unlikely(isinf(rounded)) && !isinf(mean))
			float_overflow_error();
		if (unlikely(rounded == 0.0f) && mean != 0.0)
			float_underflow_error();
		scale = (double) rounded;
		for (i = 0; i < dim; i++)
		{
			if (x[i] > 0.0)
			{
				VARBITS(code)[i / BITS_PER_BYTE] |= (bits8) (0x80 >> (i % BITS_PER_BYTE));
				x[i] -= scale;
			}
			else
				x[i] += scale;
		}
		codes[level] = PointerGetDatum(code);
		scales[level] = Float8GetDatum(scale);
	}
	values[0] = PointerGetDatum(construct_array(codes, bits, VARBITOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(scales, bits, FLOAT8OID, sizeof(float8),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* --- residual_similarity --------------------------------------------------------------- */

/* dst (ceil(nbits/8) bytes, zero-padded) = bits off .. off+nbits-1 of src (srcbytes long) */
static void
copy_bits(const bits8 *src, int srcbytes, int64 off, int nbits, uint8 *dst)
{
	int			nbytes = (nbits + BITS_PER_BYTE - 1) / BITS_PER_BYTE;
	int			shift = (int) (off % BITS_PER_BYTE);
	const bits8 *p = src + off / BITS_PER_BYTE;
	int			avail = srcbytes - (int) (off / BITS_PER_BYTE);
	int			i;

	if (shift == 0)
		memcpy(dst, p, nbytes);
	else
		for (i = 0; i < nbytes; i++)
			dst[i] = (uint8) ((p[i] << shift) |
							  (i + 1 < avail ? p[i + 1] >> (BITS_PER_BYTE - shift) : 0));
	if (nbits % BITS_PER_BYTE)
		dst[nbytes - 1] &= (uint8) (0xFF << (BITS_PER_BYTE - nbits % BITS_PER_BYTE));
}

/* the number of bits that differ between a and b, both nbytes long */
static int64
hamming(const uint8 *a, const uint8 *b, int nbytes)
{
	int64		count = 0;
	int			i = 0;

	for (; i + 8 <= nbytes; i += 8)
	{
		uint64		x,
					y;

		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		count += __builtin_popcountll(x ^ y);
	}
	for (; i < nbytes; i++)
		count += __builtin_popcount((unsigned int) (a[i] ^ b[i]));
	return count;
}

static void
require_one_dimension(ArrayType *arr, const char *what)
{
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("pgembed_scoring.residual_similarity: %s must be a one-dimensional array, got %d dimensions",
						what, ARR_NDIM(arr)),
				 errhint("pass the levels of pgembed.residual_levels as they come")));
}

PG_FUNCTION_INFO_V1(pgembed_scoring_residual_similarity);

Datum
pgembed_scoring_residual_similarity(PG_FUNCTION_ARGS)
{
	ArrayType  *codes_arr = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *scales_arr = PG_GETARG_ARRAYTYPE_P(1);
	VarBit	   *doc = PG_GETARG_VARBIT_P(2);
	Datum	   *code_datums,
			   *scale_datums;
	bool	   *code_nulls,
			   *scale_nulls;
	int			nlevels,
				nscales,
				len = -1,
				nbytes,
				i,
				j;
	uint8	  **levels;
	uint8	   *slice;
	double		sum = 0.0;

	require_one_dimension(codes_arr, "codes");
	require_one_dimension(scales_arr, "scales");
	if (ARR_ELEMTYPE(codes_arr) != VARBITOID || ARR_ELEMTYPE(scales_arr) != FLOAT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("pgembed_scoring.residual_similarity takes bit varying[] and double precision[]")));
	deconstruct_array(codes_arr, VARBITOID, -1, false, TYPALIGN_INT,
					  &code_datums, &code_nulls, &nlevels);
	deconstruct_array(scales_arr, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &scale_datums, &scale_nulls, &nscales);
	if (nlevels == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgembed_scoring.residual_similarity: the query has no levels"),
				 errhint("pass the levels of pgembed.residual_levels(q, bits)")));
	if (nscales < nlevels)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgembed_scoring.residual_similarity: %d levels but %d scales",
						nlevels, nscales),
				 errhint("pass one scale per level, as pgembed.residual_levels returns them")));

	levels = palloc(sizeof(uint8 *) * nlevels);
	for (i = 0; i < nlevels; i++)
	{
		VarBit	   *code;

		if (code_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("pgembed_scoring.residual_similarity: query level %d is NULL", i + 1)));
		if (scale_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("pgembed_scoring.residual_similarity: the scale of level %d is NULL",
							i + 1)));
		code = DatumGetVarBitP(code_datums[i]);
		if (len < 0)
			len = VARBITLEN(code);
		else if (VARBITLEN(code) != len)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("pgembed_scoring.residual_similarity: query level %d has %d bits; level 1 has %d",
							i + 1, VARBITLEN(code), len)));
		levels[i] = (uint8 *) code;	/* copied below, once len is known */
	}
	/* the SQL version reads level j of doc with substring(), so a longer doc is fine */
	if ((int64) len * nlevels > VARBITLEN(doc))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("pgembed_scoring.residual_similarity: the document code has %d bits; %d levels of %d bits need %lld",
						VARBITLEN(doc), nlevels, len, (long long) len * nlevels),
				 errhint("score codes stored with at least as many bits per dimension as the query's levels")));

	nbytes = (len + BITS_PER_BYTE - 1) / BITS_PER_BYTE;
	for (i = 0; i < nlevels; i++)
	{
		/* a copy whose padding bits are surely zero */
		VarBit	   *code = (VarBit *) levels[i];

		levels[i] = palloc0(Max(nbytes, 1));
		copy_bits(VARBITS(code), VARBITBYTES(code), 0, len, levels[i]);
	}
	slice = palloc0(Max(nbytes, 1));
	for (j = 0; j < nlevels; j++)
	{
		double		sj = DatumGetFloat8(scale_datums[j]);

		copy_bits(VARBITS(doc), VARBITBYTES(doc), (int64) j * len, len, slice);
		for (i = 0; i < nlevels; i++)
		{
			double		si = DatumGetFloat8(scale_datums[i]);
			int64		h = hamming(levels[i], slice, nbytes);

			/* float8 operators with their range errors, as the SQL expression */
			sum = float8_pl(sum, float8_mul(float8_mul(si, sj),
											(double) len - 2.0 * (double) h));
		}
	}
	pfree(slice);
	pfree(levels);
	PG_RETURN_FLOAT8(sum);
}

/*
 * MaxSim kernels: a portable C baseline, and an AVX2/FMA/F16C path on x86-64 chosen at
 * load time (pgembed_kernels_best). The AVX2 functions carry target attributes, so the
 * library itself is built for the architecture's baseline and runs on every CPU of it.
 *
 * Blocking: 4 query tokens x PGEMBED_BLOCK_DOCS (16) document tokens per step. The
 * document chunk is transposed (dim x ld), so each step over a dimension k is two
 * 8-float loads of document values, four broadcasts of query values and eight
 * multiply-adds into eight accumulators, with no horizontal sums inside the loop; the
 * per-query-token maxima stay in registers across the chunk.
 *
 * Every dot product is accumulated in float32, as pgvector's <#> does; only the order of
 * the additions differs. No -ffast-math: denormals, infinities and signed zeros behave
 * as IEEE says.
 */
#include "postgres.h"

#include <math.h>

#include "pgembed_scoring.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PGEMBED_X86_DISPATCH 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define QBLOCK 4

/* --- portable ---------------------------------------------------------------------- */

static float
half_to_float_scalar(uint16 h)
{
	uint32		sign = (uint32) (h & 0x8000) << 16;
	uint32		exponent = (h >> 10) & 0x1f;
	uint32		mantissa = h & 0x3ff;
	uint32		bits;
	float		result;

	if (exponent == 0x1f)		/* infinity or NaN */
		bits = sign | 0x7f800000 | (mantissa << 13);
	else if (exponent != 0)		/* normal */
		bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
	else if (mantissa == 0)		/* signed zero */
		bits = sign;
	else
	{
		/* subnormal: mantissa * 2^-24, exact in float */
		result = (float) mantissa * 5.9604644775390625e-08f;
		return sign ? -result : result;
	}
	memcpy(&result, &bits, sizeof(result));
	return result;
}

static void
half_to_float_portable(const uint16 *src, float *dst, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		dst[i] = half_to_float_scalar(src[i]);
}

static void
maxsim_portable(const float *q, int nq, int dim, const float *dt, int nd, int ld, float *best)
{
	int			i0;

	for (i0 = 0; i0 < nq; i0 += QBLOCK)
	{
		const float *rows[QBLOCK];
		float		rowmax[QBLOCK];
		int			r,
					j0;

		for (r = 0; r < QBLOCK; r++)
		{
			/* past the last query token: recompute the last one, discarded below */
			int			i = Min(i0 + r, nq - 1);

			rows[r] = q + (Size) i * dim;
			rowmax[r] = -INFINITY;
		}
		for (j0 = 0; j0 < nd; j0 += PGEMBED_BLOCK_DOCS)
		{
			float		acc[QBLOCK][PGEMBED_BLOCK_DOCS];
			int			k,
						l,
						width = Min(PGEMBED_BLOCK_DOCS, nd - j0);

			memset(acc, 0, sizeof(acc));
			for (k = 0; k < dim; k++)
			{
				const float *col = dt + (Size) k * ld + j0;

				for (r = 0; r < QBLOCK; r++)
				{
					float		qv = rows[r][k];

					for (l = 0; l < PGEMBED_BLOCK_DOCS; l++)
						acc[r][l] += qv * col[l];
				}
			}
			for (r = 0; r < QBLOCK; r++)
				for (l = 0; l < width; l++)
					if (acc[r][l] > rowmax[r])
						rowmax[r] = acc[r][l];
		}
		for (r = 0; r < QBLOCK && i0 + r < nq; r++)
			if (rowmax[r] > best[i0 + r])
				best[i0 + r] = rowmax[r];
	}
}

static const PgembedKernels portable_kernels = {
	"portable", maxsim_portable, half_to_float_portable
};

const PgembedKernels *
pgembed_kernels_portable(void)
{
	return &portable_kernels;
}

/* --- x86-64: AVX2 + FMA + F16C ------------------------------------------------------- */

#ifdef PGEMBED_X86_DISPATCH

__attribute__((target("avx,f16c")))
static void
half_to_float_f16c(const uint16 *src, float *dst, int n)
{
	int			i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (src + i))));
	for (; i < n; i++)
		dst[i] = half_to_float_scalar(src[i]);
}

__attribute__((target("avx2,fma")))
static inline float
hmax256(__m256 v)
{
	__m128		m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
	return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma")))
static void
maxsim_avx2(const float *q, int nq, int dim, const float *dt, int nd, int ld, float *best)
{
	const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
	const __m256i lane_lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const __m256i lane_hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
	int			i0;

	for (i0 = 0; i0 < nq; i0 += QBLOCK)
	{
		const float *q0 = q + (Size) i0 * dim;
		const float *q1 = q + (Size) Min(i0 + 1, nq - 1) * dim;
		const float *q2 = q + (Size) Min(i0 + 2, nq - 1) * dim;
		const float *q3 = q + (Size) Min(i0 + 3, nq - 1) * dim;
		__m256		m0 = neg_inf,
					m1 = neg_inf,
					m2 = neg_inf,
					m3 = neg_inf;
		float		rowmax[QBLOCK];
		int			j0,
					r;

		for (j0 = 0; j0 < nd; j0 += PGEMBED_BLOCK_DOCS)
		{
			__m256		a0l = _mm256_setzero_ps(),
						a0h = _mm256_setzero_ps(),
						a1l = _mm256_setzero_ps(),
						a1h = _mm256_setzero_ps(),
						a2l = _mm256_setzero_ps(),
						a2h = _mm256_setzero_ps(),
						a3l = _mm256_setzero_ps(),
						a3h = _mm256_setzero_ps();
			const float *col = dt + j0;
			int			k;

			for (k = 0; k < dim; k++, col += ld)
			{
				__m256		dl = _mm256_loadu_ps(col);
				__m256		dh = _mm256_loadu_ps(col + 8);
				__m256		b;

				b = _mm256_broadcast_ss(q0 + k);
				a0l = _mm256_fmadd_ps(b, dl, a0l);
				a0h = _mm256_fmadd_ps(b, dh, a0h);
				b = _mm256_broadcast_ss(q1 + k);
				a1l = _mm256_fmadd_ps(b, dl, a1l);
				a1h = _mm256_fmadd_ps(b, dh, a1h);
				b = _mm256_broadcast_ss(q2 + k);
				a2l = _mm256_fmadd_ps(b, dl, a2l);
				a2h = _mm256_fmadd_ps(b, dh, a2h);
				b = _mm256_broadcast_ss(q3 + k);
				a3l = _mm256_fmadd_ps(b, dl, a3l);
				a3h = _mm256_fmadd_ps(b, dh, a3h);
			}
			if (j0 + PGEMBED_BLOCK_DOCS > nd)
			{
				/* columns past nd are padding: they must not win the max */
				__m256i		left = _mm256_set1_epi32(nd - j0);
				__m256		keep_l = _mm256_castsi256_ps(_mm256_cmpgt_epi32(left, lane_lo));
				__m256		keep_h = _mm256_castsi256_ps(_mm256_cmpgt_epi32(left, lane_hi));

				a0l = _mm256_blendv_ps(neg_inf, a0l, keep_l);
				a0h = _mm256_blendv_ps(neg_inf, a0h, keep_h);
				a1l = _mm256_blendv_ps(neg_inf, a1l, keep_l);
				a1h = _mm256_blendv_ps(neg_inf, a1h, keep_h);
				a2l = _mm256_blendv_ps(neg_inf, a2l, keep_l);
				a2h = _mm256_blendv_ps(neg_inf, a2h, keep_h);
				a3l = _mm256_blendv_ps(neg_inf, a3l, keep_l);
				a3h = _mm256_blendv_ps(neg_inf, a3h, keep_h);
			}
			m0 = _mm256_max_ps(m0, _mm256_max_ps(a0l, a0h));
			m1 = _mm256_max_ps(m1, _mm256_max_ps(a1l, a1h));
			m2 = _mm256_max_ps(m2, _mm256_max_ps(a2l, a2h));
			m3 = _mm256_max_ps(m3, _mm256_max_ps(a3l, a3h));
		}
		rowmax[0] = hmax256(m0);
		rowmax[1] = hmax256(m1);
		rowmax[2] = hmax256(m2);
		rowmax[3] = hmax256(m3);
		for (r = 0; r < QBLOCK && i0 + r < nq; r++)
			if (rowmax[r] > best[i0 + r])
				best[i0 + r] = rowmax[r];
	}
}

static const PgembedKernels avx2_kernels = {
	"avx2", maxsim_avx2, half_to_float_f16c
};

static bool
cpu_has_avx2_fma_f16c(void)
{
	unsigned int eax,
				ebx,
				ecx,
				edx;

	__builtin_cpu_init();
	/* avx2 here also checks that the OS saves the AVX registers (XGETBV) */
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
		return false;
	if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
		return false;
	return (ecx & bit_F16C) != 0;
}

#endif							/* PGEMBED_X86_DISPATCH */

const PgembedKernels *
pgembed_kernels_best(void)
{
#ifdef PGEMBED_X86_DISPATCH
	if (cpu_has_avx2_fma_f16c())
		return &avx2_kernels;
#endif
	return &portable_kernels;
}

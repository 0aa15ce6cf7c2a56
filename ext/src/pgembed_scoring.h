/*
 * pgembed_scoring: MaxSim over pgvector token arrays, in C.
 *
 * The kernels work on float32 matrices: the query tokens row-major (nq x dim), a chunk of
 * document tokens transposed (dim x ld, ld a multiple of PGEMBED_BLOCK_DOCS, zero-padded
 * past nd) so that one query token meets PGEMBED_BLOCK_DOCS document tokens per step.
 */
#ifndef PGEMBED_SCORING_H
#define PGEMBED_SCORING_H

#include "postgres.h"

/* pgvector's vector (fde.c, residual.c): varlena header, int16 dim, int16 unused, then dim float4 */
typedef struct VectorHeader
{
	int32		vl_len_;
	int16		dim;
	int16		unused;
	float		x[FLEXIBLE_ARRAY_MEMBER];
} VectorHeader;

/* Document tokens per kernel block and per transposed chunk. */
#define PGEMBED_BLOCK_DOCS 16
#define PGEMBED_CHUNK_DOCS 64

/* best[i] = max(best[i], max over j < nd of <Q row i, Dt column j>) */
typedef void (*pgembed_maxsim_fn) (const float *q, int nq, int dim,
								   const float *dt, int nd, int ld, float *best);

/* dst[i] = the IEEE binary16 src[i] as float, for i < n */
typedef void (*pgembed_half_fn) (const uint16 *src, float *dst, int n);

typedef struct PgembedKernels
{
	const char *name;
	pgembed_maxsim_fn maxsim;
	pgembed_half_fn half_to_float;
} PgembedKernels;

/* kernels.c */
extern const PgembedKernels *pgembed_kernels_best(void);
extern const PgembedKernels *pgembed_kernels_portable(void);

/* pgembed_scoring.c: the kernels in use (the best this CPU runs, unless the
 * pgembed_scoring.kernel setting says portable) */
extern const PgembedKernels *pgembed_kernels(void);

extern void _PG_init(void);

#endif

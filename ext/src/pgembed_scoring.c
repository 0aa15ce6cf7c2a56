/*
 * pgembed_scoring: module magic, the kernel setting, and pgembed_scoring.kernel().
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "pgembed_scoring.h"

#ifdef PG_MODULE_MAGIC_EXT
PG_MODULE_MAGIC_EXT(.name = "pgembed_scoring",.version = "0.2.0");
#else
PG_MODULE_MAGIC;
#endif

typedef enum
{
	KERNEL_AUTO,
	KERNEL_PORTABLE
} KernelChoice;

static const struct config_enum_entry kernel_options[] = {
	{"auto", KERNEL_AUTO, false},
	{"portable", KERNEL_PORTABLE, false},
	{NULL, 0, false}
};

static int	kernel_choice = KERNEL_AUTO;
static const PgembedKernels *best_kernels = NULL;

void
_PG_init(void)
{
	/* Chosen once per backend, at load time: the CPU does not change under it. */
	best_kernels = pgembed_kernels_best();

	DefineCustomEnumVariable("pgembed_scoring.kernel",
							 "Which MaxSim kernel pgembed_scoring uses.",
							 "auto: the fastest this CPU runs (AVX2/FMA/F16C where present); "
							 "portable: the plain C baseline.",
							 &kernel_choice,
							 KERNEL_AUTO,
							 kernel_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgembed_scoring");
}

const PgembedKernels *
pgembed_kernels(void)
{
	if (kernel_choice == KERNEL_PORTABLE || best_kernels == NULL)
		return pgembed_kernels_portable();
	return best_kernels;
}

PG_FUNCTION_INFO_V1(pgembed_scoring_kernel);

Datum
pgembed_scoring_kernel(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(pgembed_kernels()->name));
}

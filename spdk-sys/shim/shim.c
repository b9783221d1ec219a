/* See shim.h. */
#include "shim.h"

#include <string.h>

#include <spdk/version.h>

/* spdk_env_opts.opts_size first appeared in SPDK 24.09. */
#if SPDK_VERSION_MAJOR > 24 || (SPDK_VERSION_MAJOR == 24 && SPDK_VERSION_MINOR >= 9)
#define SPDK_SYS_ENV_OPTS_SIZE 1
#endif

void
spdk_sys_env_opts_init(struct spdk_env_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
#ifdef SPDK_SYS_ENV_OPTS_SIZE
	opts->opts_size = sizeof(*opts);
#endif
	spdk_env_opts_init(opts);
}

bool
spdk_sys_cpl_is_error(const struct spdk_nvme_cpl *cpl)
{
	return spdk_nvme_cpl_is_error(cpl);
}

void
spdk_sys_io_qpair_opts_set_delay_cmd_submit(struct spdk_nvme_io_qpair_opts *opts, bool delay)
{
	opts->delay_cmd_submit = delay;
}

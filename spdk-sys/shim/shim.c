/* See shim.h. */
#include "shim.h"

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

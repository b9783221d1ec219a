/*
 * What nvkv needs of SPDK that bindgen cannot give as a plain function:
 * inline helpers and macros, and fields inside anonymous unions or
 * bitfields. Each is a small C function compiled against the same headers
 * (build.rs), so the field names and layouts are the C compiler's, not a
 * guess made on the Rust side.
 */
#ifndef SPDK_SYS_SHIM_H
#define SPDK_SYS_SHIM_H

#include <stdbool.h>

#include <spdk/env.h>
#include <spdk/nvme.h>

/*
 * spdk_env_opts_init with the struct's size set first: from SPDK 24.09 on
 * spdk_env_opts has an opts_size field that the caller must fill (before
 * spdk_env_opts_init, which keeps it and sets only the fields it covers),
 * or spdk_env_init complains "Invalid opts->opts_size". Older SPDK has no
 * such field; this is then spdk_env_opts_init alone.
 */
void spdk_sys_env_opts_init(struct spdk_env_opts *opts);

/* SPDK's spdk_nvme_cpl_is_error (a macro over the status bitfield). */
bool spdk_sys_cpl_is_error(const struct spdk_nvme_cpl *cpl);

/*
 * Sets spdk_nvme_io_qpair_opts.delay_cmd_submit (a member of an anonymous
 * union with its old name, delay_pcie_doorbell).
 */
void spdk_sys_io_qpair_opts_set_delay_cmd_submit(struct spdk_nvme_io_qpair_opts *opts,
		bool delay);

#endif

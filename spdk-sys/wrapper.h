/* What nvkv uses of SPDK: the userspace NVMe driver and its environment. */
#include <spdk/stdinc.h>
#include <spdk/env.h>
#include <spdk/nvme.h>
#include <spdk/version.h>
#include "shim/shim.h"

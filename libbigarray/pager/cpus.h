// cpus.h: how many CPUs the process may run on at once (docs/pager.md, sections 6 and 8).
#pragma once

namespace bigarray::pager {

// The CPUs of the process's affinity mask, fewer where a cgroup quota allows less CPU time
// (cgroup v2 cpu.max, v1 cpu.cfs_quota_us; rounded down, at least 1). 1 when neither can be read.
unsigned UsableCpus();

}  // namespace bigarray::pager

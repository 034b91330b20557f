// How many CPUs the process may run on at once (declared in cpus.h).
#include "pager/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

namespace bigarray::pager {
namespace {

// The first two numbers of file `path` ("max" reads as -1); false if it has none.
bool ReadTwo(const std::string& path, double* a, double* b) {
  std::ifstream f(path);
  std::string first, second;
  if (!(f >> first)) return false;
  f >> second;
  *a = first == "max" ? -1 : std::strtod(first.c_str(), nullptr);
  *b = std::strtod(second.c_str(), nullptr);
  return true;
}

// The smallest CPU quota (in CPUs) of cgroup `dir` and its ancestors, under the hierarchy mounted
// at `mount`: cgroup v2's cpu.max, or v1's cpu.cfs_quota_us / cpu.cfs_period_us. Walking up also
// finds the quota where /proc/self/cgroup names a path of the host's hierarchy and the mount is
// the container's own cgroup.
double QuotaUp(const std::string& mount, std::string dir, bool v2) {
  double cpus = 1e9;
  for (;;) {
    const std::string at = mount + dir;
    double quota = 0, period = 0, unused = 0;
    const bool found = v2 ? ReadTwo(at + "/cpu.max", &quota, &period)
                          : ReadTwo(at + "/cpu.cfs_quota_us", &quota, &unused) &&
                                ReadTwo(at + "/cpu.cfs_period_us", &period, &unused);
    if (found && quota > 0 && period > 0) cpus = std::min(cpus, quota / period);
    if (dir.empty()) return cpus;
    dir.erase(dir.rfind('/'));  // "/a/b" -> "/a" -> ""
  }
}

// The CPU time the process may use, in CPUs, by its cgroups' quotas; 1e9 where there is none.
double CgroupCpus() {
  double cpus = 1e9;
  std::ifstream f("/proc/self/cgroup");  // "0::/path" (v2), "N:cpu,cpuacct:/path" (v1)
  for (std::string line; std::getline(f, line);) {
    const size_t first = line.find(':'), second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    std::string dir = line.substr(second + 1);
    if (dir == "/") dir.clear();
    if (line.compare(0, 3, "0::") == 0) cpus = std::min(cpus, QuotaUp("/sys/fs/cgroup", dir, true));
    if (("," + line.substr(first + 1, second - first - 1) + ",").find(",cpu,") != std::string::npos) {
      cpus = std::min(cpus, QuotaUp("/sys/fs/cgroup/cpu", dir, false));
    }
  }
  return cpus;
}

}  // namespace

unsigned UsableCpus() {
  const int possible = std::max(1, static_cast<int>(sysconf(_SC_NPROCESSORS_CONF)));
  cpu_set_t* set = CPU_ALLOC(possible);
  if (!set) return 1;
  const size_t size = CPU_ALLOC_SIZE(possible);
  const int affinity = sched_getaffinity(0, size, set) == 0 ? CPU_COUNT_S(size, set) : 1;
  CPU_FREE(set);
  const double quota = CgroupCpus();
  return static_cast<unsigned>(std::max(1.0, std::min(static_cast<double>(affinity), quota)));
}

}  // namespace bigarray::pager

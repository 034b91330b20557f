// lmdb_mounts.cc: read-only mounts and read-only file systems (lmdb_mounts.h).
#include "lmdb_mounts.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace bigarray::storage::internal {
namespace {

// A mountinfo field with its octal escapes (\040 for a space, \011, \012, \134) decoded.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Whether `dir` is `mount_point` or below it.
bool Under(const std::string& dir, const std::string& mount_point) {
  if (mount_point == "/") return true;
  return dir == mount_point || (dir.starts_with(mount_point) && dir[mount_point.size()] == '/');
}

bool HasOption(const std::string& options, const std::string& option) {
  std::stringstream ss(options);
  for (std::string o; std::getline(ss, o, ',');) {
    if (o == option) return true;
  }
  return false;
}

}  // namespace

Result<ReadOnlyPlace> ReadOnlyPlaceOf(const std::string& path) {
  struct statvfs vfs;
  if (statvfs(path.c_str(), &vfs) != 0) return ErrnoStatus(errno, "statvfs " + path);
  if (!(vfs.f_flag & ST_RDONLY)) return ReadOnlyPlace::kWritable;
  char* resolved = realpath(path.c_str(), nullptr);
  if (!resolved) return ErrnoStatus(errno, "resolve " + path);
  const std::string dir = resolved;
  std::free(resolved);
  // The mount holding `dir` is the last-mounted one with the longest mount point above it; its
  // super options (after " - fstype source") are the file system's own.
  std::ifstream info("/proc/self/mountinfo");
  size_t best_length = 0;
  bool found = false, fs_read_only = false;
  for (std::string line; std::getline(info, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, mount_options, word;
    if (!(fields >> id >> parent >> devno >> root >> mount_point >> mount_options)) continue;
    while (fields >> word && word != "-") {
    }
    std::string fstype, source, super_options;
    if (!(fields >> fstype >> source >> super_options)) continue;
    mount_point = Unescape(mount_point);
    if (!Under(dir, mount_point) || mount_point.size() < best_length) continue;
    best_length = mount_point.size();
    found = true;
    fs_read_only = HasOption(super_options, "ro");
  }
  return found && fs_read_only ? ReadOnlyPlace::kReadOnlyFs : ReadOnlyPlace::kReadOnlyMountOnly;
}

}  // namespace bigarray::storage::internal

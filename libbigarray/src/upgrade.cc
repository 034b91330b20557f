#include "bigarray/upgrade.h"

#include "bigarray/storage/block_store.h"

namespace bigarray {

Result<UpgradeReport> Upgrade(const std::string& path, const std::function<void(uint64_t, uint64_t)>& progress) {
  BA_ASSIGN_OR_RETURN(storage::UpgradeReport r, storage::UpgradeLmdbStore(path, progress));
  return UpgradeReport{r.from_version, r.upgraded, r.records, r.blocks, r.payload_bytes, r.backup};
}

}  // namespace bigarray

// space.cc: the disk-space output of the tool (space.h).
#include "space.h"

#include <fmt/format.h>

#include <cstdio>

#include "args.h"
#include "attrs_cmd.h"
#include "human.h"
#include "json_text.h"
#include "shell_quote.h"

namespace bigarray::cli {

namespace {

std::string OptionalNumber(const std::optional<FileSpace>& f, uint64_t FileSpace::*field) {
  return f ? std::to_string((*f).*field) : "null";
}

}  // namespace

uint64_t BlockCount(const Array& a) {
  return (static_cast<uint64_t>(a.nbytes()) + a.block_size() - 1) / a.block_size();
}

Result<std::string> ArrayInfoJson(const Array& a) {
  BA_ASSIGN_OR_RETURN(ArraySpace stored, a.Stored());
  BA_ASSIGN_OR_RETURN(std::string attrs, AttrsJson(a.attrs()));
  const std::vector<int64_t> shape = a.shape();
  return fmt::format(
      "{{\"name\": {}, \"dtype\": \"{}\", \"shape\": {}, \"order\": \"{}\", \"ndim\": {}, \"itemsize\": {}, "
      "\"size\": {}, \"nbytes\": {}, \"block_size\": {}, \"blocks\": {}, \"blocks_stored\": {}, \"stored_bytes\": {}, "
      "\"attrs\": {}}}\n",
      JsonString(a.name()), a.dtype().str(), JsonList(shape), static_cast<char>(a.order()), shape.size(),
      a.itemsize(), a.size(), a.nbytes(), a.block_size(), BlockCount(a), stored.blocks_stored, stored.stored_bytes,
      attrs);
}

Result<std::string> ArrayInfoText(const Array& a) {
  BA_ASSIGN_OR_RETURN(ArraySpace stored, a.Stored());
  BA_ASSIGN_OR_RETURN(std::string attrs, AttrsJson(a.attrs()));
  const std::vector<int64_t> shape = a.shape();
  return fmt::format(
      "name: {}\ndtype: {}\nshape: {}\norder: {}\nndim: {}\nitemsize: {}\nsize: {}\nnbytes: {}\nblock_size: {}\n"
      "blocks: {}\nblocks_stored: {}\nstored_bytes: {}\nattrs: {}\n",
      ShellQuote(a.name()), a.dtype().str(), ShapeString(shape), static_cast<char>(a.order()), shape.size(), a.itemsize(),
      a.size(), a.nbytes(), a.block_size(), BlockCount(a), stored.blocks_stored, stored.stored_bytes, attrs);
}

Status PrintSpace(Database& db, bool json) {
  BA_ASSIGN_OR_RETURN(SpaceReport r, db.Space());
  BA_ASSIGN_OR_RETURN(const std::string attrs, AttrsJson(db.attrs()));
  const std::optional<FileSpace>& f = r.file;
  if (json) {
    std::string out = fmt::format("{{\"path\": {}, \"commit\": {}, \"latest_commit\": {}, \"live_bytes\": {}",
                                  JsonString(db.path()), r.commit, r.latest_commit, r.live_bytes);
    for (auto [key, field] : {std::pair{"page_size", &FileSpace::page_size}, {"file_bytes", &FileSpace::file_bytes},
                              {"allocated_bytes", &FileSpace::allocated_bytes}, {"used_bytes", &FileSpace::used_bytes},
                              {"free_bytes", &FileSpace::free_bytes}, {"pinned_bytes", &FileSpace::pinned_bytes},
                              {"compact_bytes", &FileSpace::compact_bytes},
                              {"reclaimable_bytes", &FileSpace::reclaimable_bytes},
                              {"leftover_bytes", &FileSpace::leftover_bytes},
                              {"slot_file_bytes", &FileSpace::slot_file_bytes},
                              {"slot_allocated_bytes", &FileSpace::slot_allocated_bytes},
                              {"slots", &FileSpace::slots}, {"free_slots", &FileSpace::free_slots},
                              {"pinned_slots", &FileSpace::pinned_slots}}) {
      out += fmt::format(", \"{}\": {}", key, OptionalNumber(f, field));
    }
    out += ", \"oldest_snapshot\": ";
    if (const auto& o = r.oldest_snapshot) {
      out += fmt::format("{{\"pid\": {}, \"process\": {}, \"commit\": {}, \"commits_behind\": {}, \"age_s\": {}}}",
                         o->pid, o->process.empty() ? "null" : JsonString(o->process), o->commit, o->commits_behind,
                         o->age_s ? fmt::format("{:.3f}", *o->age_s) : "null");
    } else {
      out += "null";
    }
    out += ", \"attrs\": " + attrs + ", \"arrays\": {";
    for (size_t i = 0; i < r.arrays.size(); ++i) {
      BA_ASSIGN_OR_RETURN(Array a, db.Get(r.arrays[i].name));
      BA_ASSIGN_OR_RETURN(std::string object, ArrayInfoJson(a));
      object.pop_back();  // the newline
      out += fmt::format("{}{}: {}", i ? ", " : "", JsonString(a.name()), object);
    }
    out += "}}\n";
    std::fputs(out.c_str(), stdout);
    return Status::Ok();
  }
  std::string out = fmt::format("path: {}\ncommit: {}\nattrs: {}\n", db.path(), r.commit, attrs);
  if (r.latest_commit != r.commit) out += fmt::format("latest_commit: {}\n", r.latest_commit);
  out += fmt::format("live_bytes: {} ({}: stored by {} array{})\n", r.live_bytes, Bytes(r.live_bytes), r.arrays.size(),
                     r.arrays.size() == 1 ? "" : "s");
  if (f) {
    out += fmt::format("file_bytes: {} ({}: the size of data.mdb, which may be sparse)\n", f->file_bytes, Bytes(f->file_bytes));
    out += fmt::format("allocated_bytes: {} ({}: on disk, as du counts)\n", f->allocated_bytes, Bytes(f->allocated_bytes));
    out += fmt::format("used_bytes: {} ({}: the pages LMDB has used)\n", f->used_bytes, Bytes(f->used_bytes));
    out += fmt::format("free_bytes: {} ({}: free pages, which later commits reuse)\n", f->free_bytes, Bytes(f->free_bytes));
    out += fmt::format("pinned_bytes: {} ({}: free pages the next commit cannot reuse yet)\n", f->pinned_bytes, Bytes(f->pinned_bytes));
    out += fmt::format("compact_bytes: {} ({}: the size after bigarray compact)\n", f->compact_bytes, Bytes(f->compact_bytes));
    out += fmt::format("reclaimable_bytes: {} ({}: what bigarray compact gives back)\n", f->reclaimable_bytes,
                       Bytes(f->reclaimable_bytes));
    out += fmt::format("slot_file_bytes: {} ({}: the size of blocks.dat, {} slots of 2 MiB)\n", f->slot_file_bytes,
                       Bytes(f->slot_file_bytes), f->slots);
    out += fmt::format("slot_allocated_bytes: {} ({}: blocks.dat on disk)\n", f->slot_allocated_bytes,
                       Bytes(f->slot_allocated_bytes));
    out += fmt::format("free_slots: {} (free for the next commit; their space is given back by then)\n", f->free_slots);
    out += fmt::format("pinned_slots: {} (freed, but a snapshot may still read them; given back once none can)\n",
                       f->pinned_slots);
    if (f->leftover_bytes) {
      out += fmt::format("leftover_bytes: {} ({}: {}, left by a compaction that was killed; bigarray "
                         "compact removes it)\n",
                         f->leftover_bytes, Bytes(f->leftover_bytes), "data.mdb.compacting");
    }
  }
  if (const auto& o = r.oldest_snapshot) {
    out += fmt::format("oldest_snapshot: commit {} (pid {}{}), {}, {} commit{} behind\n", o->commit, o->pid,
                       o->process.empty() ? "" : ", " + ShellQuote(o->process),
                       o->age_s ? Age(static_cast<int64_t>(*o->age_s * 1e9)) + " old"
                                : std::string("age unknown (not a bigarray handle)"),
                       o->commits_behind, o->commits_behind == 1 ? "" : "s");
  } else {
    out += "oldest_snapshot: none behind the latest commit\n";
  }
  for (const ArraySpace& s : r.arrays) {
    BA_ASSIGN_OR_RETURN(Array a, db.Get(s.name));
    out += fmt::format("array {}: {} of {} blocks stored, {} bytes ({})\n", JsonString(s.name), s.blocks_stored,
                       BlockCount(a), s.stored_bytes, Bytes(s.stored_bytes));
  }
  std::fputs(out.c_str(), stdout);
  return Status::Ok();
}

Status PrintCompact(const std::string& path, bool json) {
  BA_ASSIGN_OR_RETURN(CompactReport r, Compact(path));
  if (json) {
    fmt::print(
        "{{\"path\": {}, \"commit\": {}, \"before_file_bytes\": {}, \"before_allocated_bytes\": {}, "
        "\"after_file_bytes\": {}, \"after_allocated_bytes\": {}, \"before_slot_allocated_bytes\": {}, "
        "\"after_slot_allocated_bytes\": {}, \"seconds\": {:.3f}}}\n",
        JsonString(path), r.commit, r.before_file_bytes, r.before_allocated_bytes, r.after_file_bytes,
        r.after_allocated_bytes, r.before_slot_allocated_bytes, r.after_slot_allocated_bytes, r.seconds);
    return Status::Ok();
  }
  const uint64_t before = r.before_allocated_bytes + r.before_slot_allocated_bytes;
  const uint64_t after = r.after_allocated_bytes + r.after_slot_allocated_bytes;
  fmt::print("{}: {} -> {} on disk ({} given back) at commit {}, in {:.1f} s\n", path, Bytes(before), Bytes(after),
             Bytes(before > after ? before - after : 0), r.commit, r.seconds);
  return Status::Ok();
}

}  // namespace bigarray::cli

// cli.cc: the commands of the bigarray tool, one function each, and their dispatch.
//
// Each command opens the database, does its work in the handle's one transaction and commits
// once at the end; returning early on an error destroys the handle, which aborts (nothing is
// written). Data moves in chunks (transfer.h), so memory stays bounded by the cache budget.
#include "json_text.h"
#include "attrs_cmd.h"
#include "shell_quote.h"
#include "cli.h"

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <string>

#include "bigarray/database.h"
#include "bigarray/upgrade.h"
#include "bigarray/version.h"
#include "npy.h"
#include "print.h"
#include "progress.h"
#include "signal_cleanup.h"
#include "space.h"
#include "stats.h"
#include "transfer.h"
#include "watch.h"

namespace bigarray::cli {

namespace {

// ---- options shared by the commands ------------------------------------------------------------

struct Globals {
  uint64_t cache_bytes = Options{}.cache_bytes;
  bool verify_reads = true;  // false: --no-verify (Options::verify_reads)
  bool progress = true;
  std::shared_ptr<spdlog::logger> logger;  // null unless --verbose
};

template <typename... Args>
void Log(const Globals& g, fmt::format_string<Args...> format, Args&&... args) {
  if (g.logger) g.logger->debug(format, std::forward<Args>(args)...);
}

// Chunks of a tenth of the cache, between 64 KiB and 16 MiB: large enough for throughput, small
// enough that the buffers stay well inside the budget.
TransferOptions Transfer(const Globals& g, tools::Progress* progress) {
  TransferOptions t;
  t.chunk_bytes = std::clamp<uint64_t>(g.cache_bytes / 10, 64 << 10, 16 << 20);
  t.working_set_bytes = g.cache_bytes / 2;
  t.progress = progress;
  return t;
}

// Refuses an output file that would overwrite one of the database's own files (data.mdb or
// lock.mdb, under any name: a hard or symbolic link) or land anywhere inside the database
// directory `db` (the temporary file is written beside the output and renamed over it): such
// an export would change or destroy the database it reads. Paths are compared by device and
// inode, directory by directory up to the root, so other spellings (../db, symbolic links,
// bind mounts) of the same places are refused too.
Status CheckOutputOutsideDatabase(const std::string& db, const std::string& out) {
  struct stat db_st;
  if (::stat(db.c_str(), &db_st) != 0) return Status::Ok();  // opening the database says why
  auto same = [](const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; };
  // The directory the bytes go to: the output's own for a regular (or new) file, the target's
  // for an existing non-regular file, which is written in place.
  std::string where;
  struct stat out_st;
  if (::stat(out.c_str(), &out_st) == 0) {
    for (const char* own : {"data.mdb", "lock.mdb"}) {
      struct stat own_st;
      if (::stat((db + "/" + own).c_str(), &own_st) == 0 && same(out_st, own_st)) {
        const std::string file = db + "/" + own;
        return InvalidArgument(out + " is " + (out == file ? "" : file + ", ") +
                               "a file of the database being exported from: refusing to overwrite it");
      }
    }
    if (!S_ISREG(out_st.st_mode)) where = out;
  }
  if (where.empty()) {
    const size_t slash = out.rfind('/');
    where = slash == std::string::npos ? "." : slash == 0 ? "/" : out.substr(0, slash);
  }
  char* resolved = ::realpath(where.c_str(), nullptr);
  if (!resolved) return Status::Ok();  // creating the file reports what is wrong with the path
  std::string dir = resolved;
  std::free(resolved);
  for (;;) {
    struct stat dir_st;
    if (::stat(dir.c_str(), &dir_st) != 0) return ErrnoStatus(errno, "stat " + dir);
    if (same(dir_st, db_st)) {
      return InvalidArgument(out + " is inside the database directory " + db +
                             ": refusing to write there (it would change the database being exported "
                             "from); write the file elsewhere");
    }
    if (dir == "/") return Status::Ok();
    const size_t slash = dir.rfind('/');
    dir = slash == 0 ? "/" : dir.substr(0, slash);
  }
}

enum class Access { kRead, kWrite, kCreate };

Result<Database> OpenDb(const Globals& g, const std::string& path, Access access) {
  Options o;
  o.cache_bytes = g.cache_bytes;
  o.verify_reads = g.verify_reads;
  o.logger = g.logger;
  o.create_if_missing = access == Access::kCreate;
  o.read_only = access == Access::kRead;
  auto db = Database::Open(path, o);
  if (db.ok()) Log(g, "opened {} at commit {} with a cache of {} bytes", path, db->snapshot_commit(), g.cache_bytes);
  return db;
}

Status Commit(const Globals& g, Database& db) {
  Status st = db.Commit();
  if (st.code() == Code::kConflict) return Status(st.code(), st.message() + "; nothing was written");
  if (st.ok()) Log(g, "committed; {} is now at commit {}", db.path(), db.snapshot_commit());
  return st;
}

// `value` (from ParseArgs, which checked it) parsed again as its kind.
template <typename T>
T Checked(Result<T> r) {
  return std::move(r).value();
}

ArrayOptions ArrayOptionsFrom(const ParsedArgs& args, Order default_order) {
  ArrayOptions o;
  o.order = default_order;
  if (auto v = args.Value("order")) o.order = Checked(ParseOrder(*v));
  if (auto v = args.Value("block-size")) o.block_size = Checked(ParseBlockSize(*v));
  return o;
}

// The rows START:STOP:STEP of --rows as a region of the array (the whole array without --rows),
// selected as Python's slice.indices() does.
Result<Region> RowsRegion(const Array& a, const ParsedArgs& args) {
  Region r = Region::Whole(a);
  auto rows = args.Value("rows");
  if (!rows) return r;
  if (r.shape.empty()) return InvalidArgument("--rows: array '" + a.name() + "' is 0-d (it has no rows)");
  const Slice s = Checked(ParseRows(*rows));
  const int64_t n = r.shape[0], step = s.step;
  // Python's bounds: [0, n] going up, [-1, n - 1] going down (-1: before the first row).
  const int64_t lo = step > 0 ? 0 : -1, hi = step > 0 ? n : n - 1;
  auto bound = [&](std::optional<int64_t> v, int64_t absent) {
    if (!v) return absent;
    const int64_t x = *v < 0 ? (*v < -n ? lo : *v + n) : *v;  // *v + n cannot overflow here
    return std::clamp<int64_t>(x, lo, hi);
  };
  const int64_t start = bound(s.start, step > 0 ? 0 : n - 1), stop = bound(s.stop, step > 0 ? n : -1);
  // The number of rows: ceil((stop - start) / step) when positive. The difference fits: both
  // bounds lie in [-1, n].
  const int64_t span = step > 0 ? stop - start : start - stop;
  const uint64_t mag = step > 0 ? static_cast<uint64_t>(step) : static_cast<uint64_t>(-(step + 1)) + 1;
  const int64_t count = span <= 0 ? 0 : static_cast<int64_t>((static_cast<uint64_t>(span) - 1) / mag + 1);
  r.offset = count == 0 ? 0 : start;
  r.step = step;
  r.shape[0] = count;
  return r;
}

std::string ArrayName(const std::string& name) { return "array '" + name + "'"; }

// ---- the commands ------------------------------------------------------------------------------

Status CmdCreate(const Globals& g, const ParsedArgs& args) {
  const std::string& path = args.positionals[0];
  const std::string& name = args.positionals[1];
  const DType dtype = Checked(DType::Parse(*args.Value("dtype")));
  const std::vector<int64_t> shape = Checked(ParseShape(*args.Value("shape")));
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, path, Access::kCreate));
  BA_RETURN_IF_ERROR(db.Create(name, shape, dtype, ArrayOptionsFrom(args, Order::kC)).status());
  return Commit(g, db);
}

Status CmdLs(const Globals& g, const ParsedArgs& args) {  // attrs_cmd.cc
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
  return ListGroup(db, args.positionals.size() > 1 ? args.positionals[1] : "", args.Flag("recursive"));
}

Status CmdAttrs(const Globals& g, const ParsedArgs& args) {  // attrs_cmd.cc
  AttrsRequest r;
  if (args.positionals.size() > 1) r.name = args.positionals[1];
  for (const std::string& s : args.Values("set")) r.sets.push_back(Checked(ParseAttrSet(s)));
  r.deletes = args.Values("delete");
  r.json = args.Flag("json");
  const bool change = !r.sets.empty() || !r.deletes.empty();
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], change ? Access::kWrite : Access::kRead));
  BA_RETURN_IF_ERROR(RunAttrs(db, r));
  return change ? Commit(g, db) : Status::Ok();
}

Status CmdInfo(const Globals& g, const ParsedArgs& args) {
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
  if (args.positionals.size() < 2) return PrintSpace(db, args.Flag("json"));  // space.cc
  BA_ASSIGN_OR_RETURN(Array a, db.Get(args.positionals[1]));
  BA_ASSIGN_OR_RETURN(std::string out, args.Flag("json") ? ArrayInfoJson(a) : ArrayInfoText(a));  // space.cc
  std::fputs(out.c_str(), stdout);
  return Status::Ok();
}

Status CmdCompact(const Globals&, const ParsedArgs& args) {
  return PrintCompact(args.positionals[0], args.Flag("json"));  // space.cc
}

Status CmdImport(const Globals& g, const ParsedArgs& args) {
  const std::string& path = args.positionals[0];
  const std::string& name = args.positionals[1];
  const std::string& file = args.positionals[2];
  const std::string context = "import into " + ArrayName(name);  // errors name the file
  // The file first: a malformed one fails before the database is touched.
  auto opened = npy::NpyReader::Open(file);
  if (!opened.ok()) return opened.status().WithContext(context);
  npy::NpyReader in = std::move(*opened);
  const npy::NpyHeader& h = in.header();
  const ArrayOptions options = ArrayOptionsFrom(args, h.fortran_order ? Order::kF : Order::kC);

  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, path, Access::kCreate));
  BA_ASSIGN_OR_RETURN(bool exists, db.Contains(name));
  if (exists && !args.Flag("replace")) {
    return AlreadyExists(context + ": an array named '" + name + "' already exists in " + path +
                         " (--replace replaces it)");
  }
  std::optional<Array> target;
  if (exists) {
    BA_ASSIGN_OR_RETURN(Array old, db.Get(name));
    if (old.dtype() == h.dtype && old.order() == options.order && old.block_size() == options.block_size) {
      // The same kind of array: it takes the file's shape, and every element is overwritten.
      BA_RETURN_IF_ERROR(old.Resize(h.shape).WithContext(context));
      target = old;
    } else {
      BA_RETURN_IF_ERROR(db.Drop(name));  // and created again below, in the same transaction
    }
  }
  if (!target) {
    BA_ASSIGN_OR_RETURN(target, db.Create(name, h.shape, h.dtype, options));
  }
  Log(g, "importing {} {} {}-order into {}-order array '{}'", h.dtype.str(), ShapeString(h.shape),
      h.fortran_order ? 'F' : 'C', static_cast<char>(options.order), name);
  tools::Progress progress("import " + name, static_cast<uint64_t>(h.data_bytes), g.progress);
  BA_RETURN_IF_ERROR(WriteRegionFromNpy(in, *target, Region::Whole(*target), Transfer(g, &progress)).WithContext(context));
  progress.Done();
  BA_RETURN_IF_ERROR(Commit(g, db));
  return Status::Ok();
}

Status CmdExport(const Globals& g, const ParsedArgs& args) {
  const std::string& name = args.positionals[1];
  const std::string& file = args.positionals[2];
  const std::string context = "export " + ArrayName(name);  // errors name the file
  BA_RETURN_IF_ERROR(CheckOutputOutsideDatabase(args.positionals[0], file).WithContext(context));
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(name));
  BA_ASSIGN_OR_RETURN(Region region, RowsRegion(a, args));
  const bool fortran = a.order() == Order::kF;
  // SIGINT, SIGTERM and SIGHUP remove the temporary file (declared first: destroyed last).
  auto guard = RemoveOnSignal::Install();
  if (!guard.ok()) return guard.status().WithContext(context);
  auto created = npy::NpyWriter::Create(file, a.dtype(), fortran, region.shape,
                                        [&](const std::string& temp) { return guard->Arm(temp); });
  if (!created.ok()) return created.status().WithContext(context);
  npy::NpyWriter out = std::move(*created);
  tools::Progress progress("export " + name, static_cast<uint64_t>(region.size() * a.itemsize()), g.progress);
  Status st = ReadRegion(a, region, fortran, Transfer(g, &progress),
                         [&](std::span<const std::byte> data, int64_t) { return out.Write(data); });
  if (st.ok()) st = out.Commit();
  if (st.ok()) guard->Disarm();
  return st.WithContext(context);
}

Status CmdAppend(const Globals& g, const ParsedArgs& args) {
  const std::string& path = args.positionals[0];
  const std::string& name = args.positionals[1];
  const std::string& file = args.positionals[2];
  const std::string context = "append to " + ArrayName(name);  // errors name the file
  auto opened = npy::NpyReader::Open(file);
  if (!opened.ok()) return opened.status().WithContext(context);
  npy::NpyReader in = std::move(*opened);
  const npy::NpyHeader& h = in.header();

  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, path, Access::kWrite));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(name));
  const std::vector<int64_t> old_shape = a.shape();
  if (old_shape.empty()) return InvalidArgument(context + ": the array is 0-d");
  const int axis = a.order() == Order::kC ? 0 : static_cast<int>(old_shape.size()) - 1;
  bool match = h.shape.size() == old_shape.size();
  for (size_t k = 0; match && k < old_shape.size(); ++k) {
    match = static_cast<int>(k) == axis || h.shape[k] == old_shape[k];
  }
  if (!match) {
    const std::string rule = axis == 0 ? "a C-order array grows along axis 0"
                                       : "an F-order array grows along its last axis";
    return InvalidArgument(context + ": " + file + " has shape " + ShapeString(h.shape) + ", which does not match " +
                           ShapeString(old_shape) + " except along axis " + std::to_string(axis) + " (" + rule + ")");
  }
  if (!CanCastSafely(h.dtype, a.dtype())) {
    return InvalidArgument(context + ": " + file + " holds " + h.dtype.str() + ", which does not convert exactly to " +
                           a.dtype().str() + " (see bigarray append --help)");
  }
  std::vector<int64_t> new_shape = old_shape;
  if (__builtin_add_overflow(new_shape[axis], h.shape[axis], &new_shape[axis])) {
    return InvalidArgument(context + ": the array would become too large");
  }
  BA_RETURN_IF_ERROR(a.Resize(new_shape).WithContext(context));
  Log(g, "appending {} {} to '{}' along axis {}: {} -> {}", h.dtype.str(), ShapeString(h.shape), name, axis,
      ShapeString(old_shape), ShapeString(new_shape));
  tools::Progress progress("append " + name, static_cast<uint64_t>(h.data_bytes), g.progress);
  const Region tail{h.shape, axis, old_shape[axis]};
  BA_RETURN_IF_ERROR(WriteRegionFromNpy(in, a, tail, Transfer(g, &progress)).WithContext(context));
  progress.Done();
  return Commit(g, db);
}

Status CmdResize(const Globals& g, const ParsedArgs& args) {
  const std::string& name = args.positionals[1];
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kWrite));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(name));
  const std::vector<int64_t> shape = Checked(ParseShape(*args.Value("shape")));
  BA_RETURN_IF_ERROR(a.Resize(shape).WithContext("resize " + ArrayName(name)));
  return Commit(g, db);
}

Status CmdFill(const Globals& g, const ParsedArgs& args) {
  const std::string& name = args.positionals[1];
  const std::string context = "fill " + ArrayName(name);
  const Scalar value = Checked(ParseScalar(*args.Value("value")));
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kWrite));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(name));
  std::byte element[16] = {};
  BA_RETURN_IF_ERROR(EncodeScalar(value, a.dtype(), element).WithContext(context));
  BA_ASSIGN_OR_RETURN(Region region, RowsRegion(a, args));
  tools::Progress progress("fill " + name, static_cast<uint64_t>(region.size() * a.itemsize()), g.progress);
  BA_RETURN_IF_ERROR(FillRegion(a, region, element, Transfer(g, &progress)).WithContext(context));
  progress.Done();
  return Commit(g, db);
}

Status CmdRm(const Globals& g, const ParsedArgs& args) {
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kWrite));
  const std::string& name = args.positionals[1];
  if (!args.Flag("recursive")) {
    BA_RETURN_IF_ERROR(db.Drop(name));
    return Commit(g, db);
  }
  // -r: the array NAME, if there is one, and the group NAME: everything below NAME/.
  std::string group = name;
  while (!group.empty() && group.back() == '/') group.pop_back();
  BA_ASSIGN_OR_RETURN(bool is_array, db.Contains(group));
  if (is_array) BA_RETURN_IF_ERROR(db.Drop(group));
  auto below = db.DropGroup(group);
  if (!below.ok() && !(below.status().code() == Code::kNotFound && is_array)) {
    return below.status().code() == Code::kNotFound
               ? NotFound("no array or group named '" + name + "' in " + db.path())
               : below.status();
  }
  Log(g, "rm -r '{}': {} array(s) dropped", name, (is_array ? 1 : 0) + (below.ok() ? *below : 0));
  return Commit(g, db);
}

// The rows of --rows (cat) or -n (head: the first N, tail: the last N) printed in --format.
Status PrintRows(const Globals& g, const ParsedArgs& args, const Region& region, const Array& a) {
  const PrintFormat format = args.Value("format") ? Checked(ParsePrintFormat(*args.Value("format"))) : PrintFormat::kText;
  return PrintRegion(a, region, format, Transfer(g, nullptr), stdout).WithContext("print " + ArrayName(a.name()));
}

Status CmdCat(const Globals& g, const ParsedArgs& args) {
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(args.positionals[1]));
  BA_ASSIGN_OR_RETURN(Region region, RowsRegion(a, args));
  return PrintRows(g, args, region, a);
}

// head (first = true) and tail: the first or last -n rows (default 10).
Status HeadOrTail(const Globals& g, const ParsedArgs& args, bool first) {
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(args.positionals[1]));
  Region region = Region::Whole(a);
  if (region.shape.empty()) return InvalidArgument(ArrayName(a.name()) + " is 0-d (it has no rows): use cat");
  const int64_t n = args.Value("count") ? Checked(ParseCount(*args.Value("count"))) : 10;
  const int64_t rows = std::min(n, region.shape[0]);
  region.offset = first ? 0 : region.shape[0] - rows;
  region.shape[0] = rows;
  return PrintRows(g, args, region, a);
}

Status CmdHead(const Globals& g, const ParsedArgs& args) { return HeadOrTail(g, args, true); }
Status CmdTail(const Globals& g, const ParsedArgs& args) { return HeadOrTail(g, args, false); }

Status CmdRename(const Globals& g, const ParsedArgs& args) {
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kWrite));
  BA_RETURN_IF_ERROR(db.Rename(args.positionals[1], args.positionals[2])
                         .WithContext("rename " + ArrayName(args.positionals[1]) + " to '" + args.positionals[2] + "'"));
  return Commit(g, db);
}

// Copies the stored blocks of SRC only: the rest of DST reads as zeros, as SRC's does.
Status CmdCp(const Globals& g, const ParsedArgs& args) {
  const std::string& from = args.positionals[1];
  const std::string& to = args.positionals[2];
  const std::string context = "cp " + ArrayName(from) + " to '" + to + "'";
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kWrite));
  BA_ASSIGN_OR_RETURN(Array src, db.Get(from));
  ArrayOptions options;
  options.order = src.order();
  options.block_size = src.block_size();
  auto created = db.Create(to, src.shape(), src.dtype(), options);
  if (!created.ok()) return created.status().WithContext(context);
  Array dst = *created;
  BA_ASSIGN_OR_RETURN(std::vector<uint64_t> blocks, src.StoredBlocks());
  const bool fortran = src.order() == Order::kF;
  const int64_t per_block = static_cast<int64_t>(src.block_size()) / src.itemsize();
  tools::Progress progress("cp " + from, static_cast<uint64_t>(blocks.size()) * src.block_size(), g.progress);
  uint64_t done = 0;
  for (uint64_t b : blocks) {
    const int64_t begin = static_cast<int64_t>(b) * per_block;
    if (begin >= src.size()) break;  // past the shape (stored before a shrink): not part of the array
    const int64_t end = std::min(src.size(), begin + per_block);
    for (const Box& box : FlatRangeBoxes(src.shape(), fortran, begin, end)) {
      BA_ASSIGN_OR_RETURN(View in, src.Index(box.index));
      BA_RETURN_IF_ERROR(in.Load().WithContext(context));
      BA_ASSIGN_OR_RETURN(View out, dst.Index(box.index));
      BA_RETURN_IF_ERROR(out.Assign(in).WithContext(context));
    }
    progress.Update(done += src.block_size());
  }
  progress.Done();
  return Commit(g, db);
}

Status CmdStats(const Globals& g, const ParsedArgs& args) {
  if (args.Flag("handles")) return PrintHandles(args.positionals[0], args.Flag("json"));  // watch.cc
  if (args.positionals.size() < 2) {  // the database's space, as info DB
    BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
    return PrintSpace(db, args.Flag("json"));
  }
  const std::string& name = args.positionals[1];
  const bool json = args.Flag("json");
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, args.positionals[0], Access::kRead));
  BA_ASSIGN_OR_RETURN(Array a, db.Get(name));
  if (a.dtype().kind() == DTypeKind::kComplex) {
    return Unsupported("stats of " + ArrayName(name) + ": complex arrays (" + a.dtype().str() + ") are not supported");
  }
  RunningStats stats(a.dtype());
  // Only the stored blocks are read; the others are zeros, added in one step (O(stored blocks)).
  BA_ASSIGN_OR_RETURN(std::vector<uint64_t> blocks, a.StoredBlocks());
  tools::Progress progress("stats " + name, static_cast<uint64_t>(blocks.size()) * a.block_size(), g.progress && !json);
  const int64_t per_block = static_cast<int64_t>(a.block_size()) / a.itemsize();
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(Transfer(g, nullptr).chunk_bytes) / a.itemsize());
  const bool fortran = a.order() == Order::kF;
  std::vector<std::byte> buffer(static_cast<size_t>(std::min(chunk, per_block) * a.itemsize()));
  int64_t stored_elements = 0;
  uint64_t done = 0;
  for (uint64_t b : blocks) {
    const int64_t first = static_cast<int64_t>(b) * per_block;
    if (first >= a.size()) break;  // past the shape: not part of the array
    const int64_t end = std::min(a.size(), first + per_block);
    for (int64_t begin = first; begin < end; begin += chunk) {
      const int64_t stop = std::min(end, begin + chunk);
      std::byte* data = buffer.data();
      for (const Box& box : FlatRangeBoxes(a.shape(), fortran, begin, stop)) {
        BA_ASSIGN_OR_RETURN(View src, a.Index(box.index));
        BA_RETURN_IF_ERROR(src.Load().WithContext("stats of " + ArrayName(name)));
        BA_ASSIGN_OR_RETURN(View dst, View::Wrap(data, a.dtype(), box.shape, ContiguousStrides(box.shape, a.itemsize(), fortran)));
        BA_RETURN_IF_ERROR(dst.Assign(src));
        data += box.count * a.itemsize();
      }
      stats.Add(buffer.data(), stop - begin);
      stored_elements += stop - begin;
    }
    progress.Update(done += a.block_size());
  }
  stats.AddZeros(a.size() - stored_elements);
  progress.Done();
  const bool empty = stats.count() == 0;
  const std::string none = json ? "null" : "n/a";
  const std::string min = stats.min().value_or(none), max = stats.max().value_or(none);
  const std::string mean = empty ? none : JsonNumber(stats.mean()), std = empty ? none : JsonNumber(stats.std());
  if (json) {
    fmt::print("{{\"count\": {}, \"min\": {}, \"max\": {}, \"mean\": {}, \"std\": {}}}\n", stats.count(), min, max,
               mean, std);
  } else {
    fmt::print("count: {}\nmin: {}\nmax: {}\nmean: {}\nstd: {}\n", stats.count(), min, max, mean, std);
  }
  return Status::Ok();
}

// Checks everything the store recorded, in the time of the stored blocks: the records that are
// not blocks (catalog, names, change log, commit record), then each array's stored blocks (read
// straight from the store, which checks their checksums and that none is missing, extra or
// moved). Only damage is counted; any other failure (I/O, resources) ends the command as that
// error, so that "too many open files" is never reported as damaged blocks.
Status CmdVerify(const Globals& globals, const ParsedArgs& args) {
  const std::string& path = args.positionals[0];
  Globals g = globals;
  g.verify_reads = true;  // whatever --no-verify says: checking is the command's point
  BA_ASSIGN_OR_RETURN(Database db, OpenDb(g, path, Access::kRead));
  uint64_t damaged = 0, blocks_checked = 0;
  auto report = [&](const std::string& where, const Status& st) {
    fmt::print("{}: {}: {}\n", where, CodeName(st.code()), st.message());
    std::fflush(stdout);
    ++damaged;
  };
  BA_RETURN_IF_ERROR(db.VerifyRecords([&](const Status& st) { report(path, st); }));
  BA_ASSIGN_OR_RETURN(std::vector<std::string> names, db.Names());
  std::vector<Array> arrays;
  for (const std::string& name : names) {
    auto a = db.Get(name);
    if (!a.ok()) {
      if (a.status().code() != Code::kCorruption) return a.status();
      report(ArrayName(name), a.status());
      continue;
    }
    arrays.push_back(*a);
  }
  tools::Progress progress("verify", arrays.size(), "arrays", g.progress);
  for (size_t n = 0; n < arrays.size(); ++n) {
    const Array& a = arrays[n];
    const std::string where = ArrayName(a.name());
    BA_ASSIGN_OR_RETURN(uint64_t checked, a.Verify([&](uint64_t block, const Status& st) {
      report(block == Array::kNoBlockIndex ? where : where + " block " + std::to_string(block), st);
    }));
    blocks_checked += checked;
    auto stored = a.StoredBlocks();
    if (stored.ok() && !stored->empty() && stored->back() >= BlockCount(a)) {
      report(where, Corruption("block " + std::to_string(stored->back()) + " is stored, but its shape " +
                               ShapeString(a.shape()) + " of " + a.dtype().str() + " has only " +
                               std::to_string(BlockCount(a)) + " blocks"));
    }
    progress.Update(n + 1);
  }
  progress.Done();
  if (damaged) {
    return Corruption(std::to_string(damaged) + " damaged " + (damaged == 1 ? "record or block" : "records or blocks") +
                      " in " + path);
  }
  fmt::print("{}: ok, {} arrays, {} blocks checked\n", path, arrays.size(), blocks_checked);
  return Status::Ok();
}

// Converts a database of an older format version in place (docs/format.md, "Upgrading").
Status CmdUpgrade(const Globals& g, const ParsedArgs& args) {
  const std::string& path = args.positionals[0];
  tools::Progress progress("upgrade", 0, "blocks", g.progress);
  BA_ASSIGN_OR_RETURN(UpgradeReport r, Upgrade(path, [&](uint64_t done, uint64_t total) {
    progress.SetTotal(total);
    progress.Update(done);
  }));
  progress.Done();
  if (!r.upgraded) {
    fmt::print("{}: already of format version {}; nothing to do\n", path, r.from_version);
    return Status::Ok();
  }
  fmt::print("{}: upgraded from format version {} to {}: {} catalog records, {} blocks ({} bytes) copied and checked;"
             " the old file is kept as {} (delete it once satisfied)\n",
             path, r.from_version, version().format, r.records, r.blocks, r.payload_bytes, r.backup);
  return Status::Ok();
}

Status CmdWatch(const Globals& g, const ParsedArgs& args) {  // watch.cc
  WatchOptions o;
  o.path = args.positionals[0];
  if (args.positionals.size() > 1) o.name = args.positionals[1];
  o.json = args.Flag("json");
  if (auto count = args.Value("count")) {
    BA_ASSIGN_OR_RETURN(o.count, ParseCount(*count));
  }
  o.cache_bytes = g.cache_bytes;
  o.logger = g.logger;
  return Watch(o);
}

// ---- the command table ---------------------------------------------------------------------------

using CommandFn = Status (*)(const Globals&, const ParsedArgs&);

struct Command {
  CommandSpec spec;
  CommandFn run;
};

const OptionSpec kGlobalOptions[] = {
    {"cache", 0, ValueKind::kByteSize},
    {"no-verify", 0, ValueKind::kFlag},
    {"no-progress", 0, ValueKind::kFlag},
    {"verbose", 'v', ValueKind::kFlag},
    {"help", 'h', ValueKind::kFlag},
    {"version", 0, ValueKind::kFlag},
};

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {{"create",
        {"DB", "NAME"},
        {{"dtype", 0, ValueKind::kDType, true},
         {"shape", 0, ValueKind::kShape, true},
         {"order", 0, ValueKind::kOrder},
         {"block-size", 0, ValueKind::kBlockSize}}},
       CmdCreate},
      {{"ls", {"DB"}, {{"recursive", 'r', ValueKind::kFlag}}, {"GROUP"}}, CmdLs},
      {{"info", {"DB"}, {{"json", 0, ValueKind::kFlag}}, {"NAME"}}, CmdInfo},
      {{"attrs",
        {"DB"},
        {{"set", 0, ValueKind::kAttrSet, false, true},
         {"delete", 0, ValueKind::kText, false, true},
         {"json", 0, ValueKind::kFlag}},
        {"NAME"}},
       CmdAttrs},
      {{"import",
        {"DB", "NAME", "FILE.npy"},
        {{"replace", 0, ValueKind::kFlag}, {"order", 0, ValueKind::kOrder}, {"block-size", 0, ValueKind::kBlockSize}}},
       CmdImport},
      {{"export", {"DB", "NAME", "FILE.npy"}, {{"rows", 0, ValueKind::kRows}}}, CmdExport},
      {{"append", {"DB", "NAME", "FILE.npy"}, {}}, CmdAppend},
      {{"resize", {"DB", "NAME"}, {{"shape", 0, ValueKind::kShape, true}}}, CmdResize},
      {{"fill", {"DB", "NAME"}, {{"value", 0, ValueKind::kScalar, true}, {"rows", 0, ValueKind::kRows}}}, CmdFill},
      {{"rm", {"DB", "NAME"}, {{"recursive", 'r', ValueKind::kFlag}}}, CmdRm},
      {{"stats", {"DB"}, {{"json", 0, ValueKind::kFlag}, {"handles", 0, ValueKind::kFlag}}, {"NAME"}}, CmdStats},
      {{"cat", {"DB", "NAME"}, {{"rows", 0, ValueKind::kRows}, {"format", 0, ValueKind::kFormat}}}, CmdCat},
      {{"head", {"DB", "NAME"}, {{"count", 'n', ValueKind::kCount}, {"format", 0, ValueKind::kFormat}}}, CmdHead},
      {{"tail", {"DB", "NAME"}, {{"count", 'n', ValueKind::kCount}, {"format", 0, ValueKind::kFormat}}}, CmdTail},
      {{"rename", {"DB", "OLD", "NEW"}, {}}, CmdRename},
      {{"cp", {"DB", "SRC", "DST"}, {}}, CmdCp},
      {{"verify", {"DB"}, {}}, CmdVerify},
      {{"upgrade", {"DB"}, {}}, CmdUpgrade},
      {{"compact", {"DB"}, {{"json", 0, ValueKind::kFlag}}}, CmdCompact},
      {{"watch", {"DB"}, {{"json", 0, ValueKind::kFlag}, {"count", 0, ValueKind::kText}}, {"NAME"}}, CmdWatch},
  };
  return commands;
}

// Magnitude and sign of an integral scalar; nullopt when it is not an integer.
struct Integer {
  bool negative = false;
  uint64_t magnitude = 0;
};
std::optional<Integer> IntegerValue(const Scalar& v) {
  if (v.imag != 0) return std::nullopt;
  if (v.as_uint64) return Integer{false, *v.as_uint64};
  if (v.as_int64) {
    const int64_t i = *v.as_int64;
    return Integer{i < 0, i < 0 ? static_cast<uint64_t>(-(i + 1)) + 1 : static_cast<uint64_t>(i)};
  }
  if (std::isfinite(v.real) && v.real == std::trunc(v.real) && std::fabs(v.real) < 0x1p64) {
    return Integer{v.real < 0, static_cast<uint64_t>(std::fabs(v.real))};
  }
  return std::nullopt;
}

}  // namespace

Status EncodeScalar(const Scalar& value, const DType& dtype, std::byte* element) {
  auto cannot = [&](const std::string& why) {
    return InvalidArgument("value " + value.text + " cannot be stored as " + dtype.str() + ": " + why);
  };
  const int isz = dtype.itemsize();
  switch (dtype.kind()) {
    case DTypeKind::kBool:
      element[0] = std::byte{value.real != 0 || value.imag != 0};
      return Status::Ok();
    case DTypeKind::kInt:
    case DTypeKind::kUInt: {
      auto integer = IntegerValue(value);
      if (!integer) return cannot(value.imag != 0 ? "it has an imaginary part" : "it is not an integer");
      const int bits = 8 * isz;
      uint64_t limit = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;  // the largest magnitude
      if (dtype.kind() == DTypeKind::kInt) limit = (1ull << (bits - 1)) - (integer->negative ? 0 : 1);
      if (integer->negative && dtype.kind() == DTypeKind::kUInt && integer->magnitude != 0) {
        return cannot("it is negative");
      }
      if (integer->magnitude > limit) return cannot("it is out of range");
      const uint64_t v = integer->negative ? ~integer->magnitude + 1 : integer->magnitude;
      for (int k = 0; k < isz; ++k) {
        element[dtype.little_endian() ? k : isz - 1 - k] = static_cast<std::byte>(v >> (8 * k));
      }
      return Status::Ok();
    }
    case DTypeKind::kFloat:
      if (value.imag != 0) return cannot("it has an imaginary part");
      dtype.FromDouble(value.real, element);
      if (std::isfinite(value.real) && !std::isfinite(dtype.ToDouble(element))) return cannot("it is out of range");
      return Status::Ok();
    case DTypeKind::kComplex: {
      const DType part = DType::Parse(std::string(dtype.little_endian() ? "<" : ">") + "f" + std::to_string(isz / 2)).value();
      part.FromDouble(value.real, element);
      part.FromDouble(value.imag, element + isz / 2);
      if ((std::isfinite(value.real) && !std::isfinite(part.ToDouble(element))) ||
          (std::isfinite(value.imag) && !std::isfinite(part.ToDouble(element + isz / 2)))) {
        return cannot("it is out of range");
      }
      return Status::Ok();
    }
  }
  return cannot("unknown dtype");
}

int ExitCodeFor(const Status& status) {
  if (status.ok()) return kExitOk;
  return status.code() == Code::kConflict ? kExitConflict : kExitError;
}

int Run(int argc, const char* const* argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "help") return RunHelp(argc, argv);
  std::vector<CommandSpec> specs;
  for (const Command& c : Commands()) specs.push_back(c.spec);
  auto parsed = ParseArgs(argc, argv, kGlobalOptions, specs);
  if (!parsed.ok()) {
    std::fprintf(stderr, "bigarray: %s\nTry 'bigarray --help'.\n", parsed.status().message().c_str());
    return kExitUsage;
  }
  const ParsedArgs& args = *parsed;
  if (args.help) {
    const std::string_view text = HelpText(args.command ? args.command->name : "");
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kExitOk;
  }
  if (args.Flag("version")) {
    const Version v = version();
    std::printf("bigarray %s (format %u)\n", v.str().c_str(), static_cast<unsigned>(v.format));
    return kExitOk;
  }
  if (!args.command) {
    const std::string_view text = HelpText("");
    std::fwrite(text.data(), 1, text.size(), stderr);
    return kExitUsage;
  }
  Globals g;
  if (auto cache = args.Value("cache")) g.cache_bytes = Checked(ParseByteSize(*cache));
  g.verify_reads = !args.Flag("no-verify");
  g.progress = !args.Flag("no-progress");
  if (args.Flag("verbose")) {
    g.logger = std::make_shared<spdlog::logger>("bigarray", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    g.logger->set_level(spdlog::level::debug);
  }
  const Command& command = Commands()[static_cast<size_t>(args.command - specs.data())];
  // stats: --handles takes no NAME.
  if (command.run == CmdStats && args.Flag("handles") && args.positionals.size() > 1) {
    std::fprintf(stderr, "bigarray: stats: --handles takes no NAME\nTry 'bigarray stats --help'.\n");
    return kExitUsage;
  }
  Status st;
  try {
    st = command.run(g, args);
  } catch (const std::exception& e) {
    st = Internal(e.what());
  }
  std::fflush(stdout);
  if (!st.ok()) std::fprintf(stderr, "bigarray %s: %s\n", std::string(command.spec.name).c_str(), st.ToString().c_str());
  return ExitCodeFor(st);
}

}  // namespace bigarray::cli

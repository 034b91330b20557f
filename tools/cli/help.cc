// help.cc: the --help texts. docs/cli.md shows each of them verbatim (a test checks it).
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include "cli.h"

namespace bigarray::cli {

namespace {

constexpr std::string_view kGeneral = R"(Usage: bigarray [OPTIONS] COMMAND ARGS...

A transactional out-of-core array store: arrays split into blocks in a database (a directory
holding an LMDB environment), changed in transactions that commit all or nothing.

Commands:
  create DB NAME --dtype T --shape D0,D1,...   create an array of zeros
  ls DB [GROUP] [-r]                           list the arrays and groups (one level)
  info DB [NAME] [--json]                      describe DB's disk space, or an array
  attrs DB [NAME] [--set K=JSON] [--delete K]  show or change attributes
  import DB NAME FILE.npy                      store a .npy file as a new array
  export DB NAME FILE.npy [--rows A:B[:S]]     write an array, or rows of it, to a .npy file
  append DB NAME FILE.npy                      append the data of a .npy file to an array
  resize DB NAME --shape D0,D1,...             change the shape of an array
  fill DB NAME --value V [--rows A:B[:S]]      set elements to a value
  rm DB NAME [-r]                              delete an array (-r: or a group)
  stats DB NAME [--json]                       count, min, max, mean and std of an array
  stats DB [--json]                            DB's disk space, as info DB
  stats DB --handles [--json]                  list the processes holding DB open
  verify DB                                    check every block and record
  upgrade DB                                   convert a database of an older format
  compact DB [--json]                          give back the space no commit needs
  cat DB NAME [--rows A:B[:S]] [--format F]    print the values of an array, or of rows
  head DB NAME [-n ROWS]                       print the first rows (default 10)
  tail DB NAME [-n ROWS]                       print the last rows (default 10)
  rename DB OLD NEW                            rename an array
  cp DB SRC DST                                copy an array (its stored blocks)
  watch DB [NAME] [--json] [--count N]         print a line per new commit, until Ctrl-C
  help COMMAND                                 show the help of a command

Options, before or after the command:
  --cache SIZE     RAM for the page cache, e.g. 256M or 4G (default 1G); a larger
                   transaction spills to a scratch file in the database directory
  --no-verify      do not check block checksums when reading array data (faster first
                   reads; damage shows as wrong values, not an error); verify ignores it
  --no-progress    no progress bars (otherwise shown on a terminal after about a second)
  -v, --verbose    log details to stderr
  -h, --help       show this help, or a command's: bigarray help COMMAND
  --version        print the version of bigarray and of its on-disk format

Option values follow as --opt VALUE or --opt=VALUE. Sizes take the suffixes K, M and G.
Exit codes: 0 success, 1 error, 2 usage error, 3 transaction conflict (nothing was written).
)";

#define BA_GLOBAL_OPTIONS "\nGlobal options: --cache SIZE, --no-verify, --no-progress, -v/--verbose, -h/--help.\n"

constexpr std::string_view kCreate = R"(Usage: bigarray create DB NAME --dtype T --shape D0,D1,... [--order C|F] [--block-size BYTES]

Creates an array of zeros named NAME in the database DB (which is created if missing).

  --dtype T            element type, a NumPy type string: b1, i1, i2, i4, i8, u1, u2, u4,
                       u8, f2, f4, f8, c8, c16, optionally preceded by the byte order < or >
                       (default: the machine's byte order)
  --shape D0,D1,...    extents, e.g. 1000,3; 0 is allowed; an empty value makes a 0-d array
  --order C|F          memory order: C (row-major, the default) or F (column-major)
  --block-size BYTES   bytes per stored block: a multiple of 4096 up to 1G (default 2M)
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kLs = R"(Usage: bigarray ls DB [GROUP] [-r]

Lists what lies one level below GROUP (a name such as runs/2026; the top level without it)
in name order, one per line. An array: its name relative to GROUP, dtype, shape, order and
size in bytes, separated by tabs, as in "temps  <f8  (1000, 24)  C  192000". A sub-group
(names with '/' form groups): its name and a '/', as in "2026/". A name with spaces, quotes,
control characters or bytes that are not UTF-8 is quoted as ls quotes file names: 'a b',
"it's", 'a'$'\t''b'.

  -r, --recursive   list every array below GROUP instead, by its name relative to GROUP
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kInfo = R"(Usage: bigarray info DB [NAME] [--json]

Without NAME, describes the disk space of DB: the bytes its arrays store (live), data.mdb's
apparent and allocated size, LMDB's free pages and those not reusable yet, the size after
bigarray compact and what it gives back (reclaimable), and the oldest snapshot that any
process holds open, which keeps the pages freed after it from being reused; then each array's
stored blocks and bytes. With NAME, describes array NAME: dtype, shape, order, item size,
number of elements, size in bytes, block size, number of blocks, blocks stored (blocks of zeros
are not stored) and their bytes.

With NAME, the last line shows the array's attributes as one JSON object (see bigarray attrs).

  --json   print one JSON object. For DB, the keys path, commit, latest_commit, live_bytes,
           page_size, file_bytes, allocated_bytes, used_bytes, free_bytes, pinned_bytes,
           compact_bytes, reclaimable_bytes, leftover_bytes, slot_file_bytes,
           slot_allocated_bytes, slots, free_slots, pinned_slots (null without a local file),
           oldest_snapshot (null, or pid, process, commit, commits_behind and age_s) and
           arrays (each array's object, by name). For NAME, the keys name, dtype, shape,
           order, ndim, itemsize, size, nbytes, block_size, blocks, blocks_stored,
           stored_bytes and attrs.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kAttrs = R"(Usage: bigarray attrs DB [NAME] [--set KEY=JSON]... [--delete KEY]... [--json]

Shows the attributes of array NAME, of group NAME when it ends with '/' (runs/), or of the
database without NAME: one "KEY: VALUE" line each, VALUE in JSON; an array value (set from
Python, e.g. a NumPy array) as nested lists followed by its dtype and shape.

With --set or --delete, changes them instead, in one transaction: the deletions first,
then the settings, in the order given; prints nothing.

  --set KEY=JSON   set KEY (up to the first '=') to the JSON value: a number, true, false,
                   null, a list, an object, or a string in double quotes, as in
                   --set 'units="K"' --set valid_range=[0,400]; repeatable
  --delete KEY     delete KEY (an error when there is none); repeatable
  --json           print one JSON object {KEY: VALUE, ...}; array values as nested lists
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kImport = R"(Usage: bigarray import DB NAME FILE.npy [--replace] [--order C|F] [--block-size BYTES]

Stores FILE.npy as a new array NAME with the file's dtype and shape, in one transaction (DB
is created if missing). Reads .npy format versions 1.0, 2.0 and 3.0, C or Fortran order,
either byte order. The file is streamed: memory stays bounded by --cache. A malformed or
truncated file is an error, and then the database is unchanged.

  --replace            replace an existing array NAME (otherwise that is an error)
  --order C|F          memory order of the array (default: the file's); in the other order
                       the file is read once per slab of the array that fits in half the
                       cache (from a pipe: in one pass, slow when the array exceeds the cache)
  --block-size BYTES   bytes per stored block: a multiple of 4096 up to 1G (default 2M)
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kExport = R"(Usage: bigarray export DB NAME FILE.npy [--rows START:STOP[:STEP]]

Writes array NAME, or some of its rows, to FILE.npy (format version 1.0) in the array's
dtype and order, streaming. The file appears only when complete; an export ended by
SIGINT, SIGTERM or SIGHUP removes its temporary file. FILE.npy may not be inside DB's
directory, nor be one of DB's files under another name.

  --rows START:STOP[:STEP]   rows along axis 0, as Python's a[START:STOP:STEP]: negative
                             values count from the end, a missing bound means the start or
                             the end, STEP (default 1) may be negative; e.g. 10:20, :100,
                             -5: (also written --rows=-5:), ::10, ::-1
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kAppend = R"(Usage: bigarray append DB NAME FILE.npy

Appends the data of FILE.npy to array NAME, in one transaction. A C-order array grows along
axis 0 by the file's extent on axis 0; an F-order array grows along its last axis by the
file's extent on its last axis. The file's other extents must equal the array's.

The file's dtype must be the array's, in either byte order, or one that converts to it
exactly: the same kind with a smaller item size (i2 -> i8, f4 -> f8, c8 -> c16), an unsigned
integer to a wider signed one (u4 -> i8), or an integer to a float that holds all its values
(i1/u1 -> f2; up to i2/u2 -> f4; up to i4/u4 -> f8).
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kResize = R"(Usage: bigarray resize DB NAME --shape D0,D1,...

Gives array NAME a new shape, as NumPy's ndarray.resize: the elements keep their flat order
(the array's, C or F), new elements are zeros, and elements past a smaller size are dropped.
The number of dimensions may change.

  --shape D0,D1,...    the new extents
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kFill = R"(Usage: bigarray fill DB NAME --value V [--rows START:STOP[:STEP]]

Sets every element of array NAME, or of some of its rows, to V, in one transaction.

  --value V            a number (3, -2.5, 1e-3, nan, inf), true or false, or a complex
                       number (1+2j); integer arrays need an integer in their range, real
                       arrays a value without imaginary part, bool arrays store V != 0
  --rows START:STOP[:STEP]   only these rows along axis 0, as for export
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kRm = R"(Usage: bigarray rm DB NAME [-r]

Deletes array NAME, its blocks and its attributes.

  -r, --recursive   also delete group NAME: every array whose name begins with NAME/,
                    and the attributes of the group and its sub-groups; NAME may be a
                    group only (an error when there is neither an array nor a group)
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kStats = R"(Usage: bigarray stats DB NAME [--json]
       bigarray stats DB [--json]
       bigarray stats DB --handles [--json]

Prints the count, min, max, mean and std (population standard deviation) of the elements of
array NAME, computed in one streaming pass over the blocks the array has stored; the others
are zeros and count as such without being read, so a sparse array takes time in proportion
to its stored blocks. A NaN element makes min, max, mean and std NaN.
An empty array has count 0 and no other values (n/a; null in JSON). Bool arrays count as 0
and 1. Complex arrays are refused.

  --json      print one JSON object with the keys count, min, max, mean and std; NaN and
              infinities are written NaN, Infinity and -Infinity, as Python's json module does
  without NAME, the disk space of DB, exactly as bigarray info DB prints it
  --handles   instead, list the handles that processes on this host hold open on DB: pid,
              process name, the commit each reads and for how long, its cache, dirty bytes
              and page faults as of its last commit or abort; then the oldest snapshot open
              (from LMDB's reader table), its age and how many commits behind it is. With
              --json: one object with the keys latest_commit, handles, readers and
              oldest_snapshot. Handles of processes that died are not listed.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kWatch = R"(Usage: bigarray watch DB [NAME] [--json] [--count N]

Follows DB as others commit to it: waits (without polling) for each commit newer than the
one it has seen and prints one line for it: the commit id, then each array the commit
changed with its new shape, separated by tabs; for a commit 42 that appended a row to
array temps:

    commit 42    temps (1001, 24)

Commits that land while a line is printed are reported together, on the next line, under
the newest commit's id. Ends on Ctrl-C (SIGINT) or SIGTERM with exit code 0.

  NAME        print only the commits that changed array NAME
  --json      print one JSON object per line with the keys commit, previous_commit,
              time (Unix seconds) and arrays (a list of objects with the keys name and shape)
  --count N   exit after N lines
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kVerify = R"(Usage: bigarray verify DB

Checks every record of the database: the catalog, the names, the change log and the
commit record, then every stored block of every array against its checksum, and that each
array's stored blocks are exactly the ones recorded (none missing, extra or moved). Takes
the time of the stored blocks, whatever the arrays' sizes. Prints one line per damaged
record or block and exits with 1 when there is any; otherwise prints a one-line summary
and exits with 0. A failure that is not damage (an I/O error, too many open files) ends
the check with that error, never reported as damage.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kUpgrade = R"(Usage: bigarray upgrade DB

Converts database DB, written by an older bigarray (format version 1 or 2), to this
build's format, in place. Every block is checked against its old checksum first: a damaged
one stops the conversion with nothing changed. No other process may have DB open
(processes that open it meanwhile wait). The old file is kept as DB/data.mdb.format1 (or
.format2); delete it once satisfied. Killed at any moment, DB is the old or the new
database; run it again.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kCat = R"(Usage: bigarray cat DB NAME [--rows START:STOP[:STEP]] [--format text|csv|json]

Prints the values of array NAME, or of some of its rows.

  --rows START:STOP[:STEP]   only these rows along axis 0, as for export
  --format text|csv|json     text (the default): as NumPy's print() shows the array, with
                             its alignment and line wrapping; an array of more than 1000
                             elements is summarized to its first and last 3 entries along
                             each axis, with ..., and only those are read.
                             csv: one line per element (1-d) or per row (2-d), values as
                             Python's repr() writes them; every selected element.
                             json: nested lists, as json.dumps(a.tolist()) writes them,
                             complex values as [real, imag]; every selected element.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kHead = R"(Usage: bigarray head DB NAME [-n ROWS] [--format text|csv|json]

Prints the first ROWS rows (along axis 0) of array NAME, as cat does.

  -n, --count ROWS          the number of rows (default 10)
  --format text|csv|json    as for cat
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kTail = R"(Usage: bigarray tail DB NAME [-n ROWS] [--format text|csv|json]

Prints the last ROWS rows (along axis 0) of array NAME, as cat does.

  -n, --count ROWS          the number of rows (default 10)
  --format text|csv|json    as for cat
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kRename = R"(Usage: bigarray rename DB OLD NEW

Renames array OLD to NEW, in one transaction. NEW must not exist. Only the array's record
changes: the cost does not depend on its size.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kCp = R"(Usage: bigarray cp DB SRC DST

Creates array DST as a copy of array SRC: the same dtype, shape, order, block size and
values, in one transaction. DST must not exist. Only the blocks SRC has stored are read and
written (blocks of zeros are not stored), so the cost is proportional to them, not to the
array's size.
)" BA_GLOBAL_OPTIONS;

constexpr std::string_view kCompact = R"(Usage: bigarray compact DB [--json]

Rewrites DB into the least space and gives the rest back to the file system: the space of
dropped arrays, shrunk tails, old versions and LMDB's free pages (the reclaimable bytes of
bigarray info DB). The data and the commit id stay the same. It copies what the latest commit
uses (LMDB's compacting copy) into a temporary file in DB, then replaces data.mdb by it in one
rename: killed at any moment, DB is intact, before or after. The file system must have room
for the copy. Processes that open DB meanwhile wait until it is done. While another process
has DB open, it refuses, naming the processes, and changes nothing.

  --json   print one JSON object with the keys path, commit, before_file_bytes,
           before_allocated_bytes, after_file_bytes, after_allocated_bytes (data.mdb),
           before_slot_allocated_bytes, after_slot_allocated_bytes (blocks.dat) and seconds
)" BA_GLOBAL_OPTIONS;

#undef BA_GLOBAL_OPTIONS

constexpr std::pair<std::string_view, std::string_view> kHelp[] = {
    {"create", kCreate}, {"ls", kLs},         {"info", kInfo}, {"attrs", kAttrs}, {"import", kImport},
    {"export", kExport}, {"append", kAppend}, {"resize", kResize}, {"fill", kFill},
    {"rm", kRm},         {"stats", kStats},   {"verify", kVerify}, {"upgrade", kUpgrade}, {"cat", kCat},
    {"head", kHead},     {"tail", kTail},     {"rename", kRename}, {"cp", kCp},
    {"watch", kWatch},   {"compact", kCompact},
};

}  // namespace

std::string_view HelpText(std::string_view command) {
  for (const auto& [name, text] : kHelp) {
    if (name == command) return text;
  }
  return kGeneral;
}

int RunHelp(int argc, const char* const* argv) {
  if (argc == 2) {
    std::fwrite(kGeneral.data(), 1, kGeneral.size(), stdout);
    return kExitOk;
  }
  const std::string_view command = argv[2];
  const std::vector<std::string_view> names = CommandNames();
  if (argc > 3 || std::find(names.begin(), names.end(), command) == names.end()) {
    const std::string what = argc > 3 ? "help takes one COMMAND" : "unknown command '" + std::string(command) + "'";
    std::fprintf(stderr, "bigarray: %s\nTry 'bigarray --help'.\n", what.c_str());
    return kExitUsage;
  }
  const std::string_view text = HelpText(command);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return kExitOk;
}

std::vector<std::string_view> CommandNames() {
  std::vector<std::string_view> names;
  for (const auto& [name, text] : kHelp) names.push_back(name);
  return names;
}

}  // namespace bigarray::cli

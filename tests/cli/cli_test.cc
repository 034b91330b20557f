// The bigarray tool as a black box: every command, its output formats, its error paths and exit
// codes (docs/cli.md). Runs the built binary; fixtures are in tests/cli/data (make_fixtures.py).
#include <doctest/doctest.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "catalog_util.h"
#include "cli.h"
#include "cli_test_util.h"
#include "json_text.h"
#include "npy.h"
#include "raw_lmdb.h"

using namespace bigarray;
using namespace bigarray::testing;

namespace {

struct Npy {
  npy::NpyHeader header;
  std::string data;
};

Npy LoadNpy(const std::string& path) {
  auto r = npy::NpyReader::Open(path);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  Npy n{r->header(), std::string(static_cast<size_t>(r->header().data_bytes), '\0')};
  REQUIRE(r->Read(std::as_writable_bytes(std::span(n.data))).ok());
  REQUIRE(r->Finish().ok());
  return n;
}

std::vector<double> Doubles(const Npy& n) {
  std::vector<double> v(n.data.size() / 8);
  if (!v.empty()) std::memcpy(v.data(), n.data.data(), n.data.size());
  return v;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Flips the first payload byte of the first stored block (its checksum then fails), or a byte of
// the record of the first array, in place in data.mdb, as damage on disk would (a commit through
// LMDB would not match the database's commit record). The value is written through LMDB's
// writable map of the file (MDB_WRITEMAP) inside a read transaction, which never commits.
enum class Damage { kBlock, kArrayRecord };
void DamageDatabase(const std::string& path, Damage what) {
  bool done = false;
  bigarray::testing::WithWritableMap(path, [&](MDB_txn* txn) {
    bigarray::testing::ForEachRecord(txn, what == Damage::kBlock ? "blocks" : "meta", [&](MDB_val& key, MDB_val& val) {
      std::string_view k(static_cast<char*>(key.mv_data), key.mv_size);
      auto* v = static_cast<unsigned char*>(val.mv_data);
      if (what == Damage::kBlock) {
        const size_t header = val.mv_size >= 2048 + 4080 ? 4080 : 32;  // docs/format.md
        v[header] ^= 0x5a;
      } else if (k.starts_with("a/")) {
        v[val.mv_size - 1] ^= 0x5a;
      } else {
        return true;
      }
      done = true;
      return false;
    });
  });
  REQUIRE(done);
}

}  // namespace

TEST_CASE("help: every command's --help is its text, and docs/cli.md shows it verbatim") {
  Cli cli;
  const std::string docs = ReadFile(BIGARRAY_DOCS);
  REQUIRE(!docs.empty());
  CliResult r = cli({"--help"});
  CHECK_EXIT(r, 0);
  CHECK(r.out == std::string(cli::HelpText("")));
  CHECK_MESSAGE(Contains(docs, "```text\n" + r.out + "```\n"), "docs/cli.md lacks the text of bigarray --help");
  for (std::string_view name : cli::CommandNames()) {
    const std::string cmd(name);
    for (const auto& args : {std::vector<std::string>{cmd, "--help"}, std::vector<std::string>{"-h", cmd},
                             std::vector<std::string>{cmd, "db", "-h"}}) {
      r = cli(args);
      CHECK_EXIT(r, 0);
      CHECK_MESSAGE(r.out == std::string(cli::HelpText(cmd)), cmd);
    }
    CHECK_MESSAGE(r.out.starts_with("Usage: bigarray " + cmd), cmd);
    CHECK_MESSAGE(Contains(docs, "```text\n" + r.out + "```\n"), "docs/cli.md lacks the text of bigarray " << cmd << " --help");
  }
  // No command: the help on stderr, as a usage error.
  r = cli({});
  CHECK(r.code == 2);
  CHECK(r.err == std::string(cli::HelpText("")));
}

TEST_CASE("usage errors exit with 2 and touch nothing") {
  Cli cli;
  const std::vector<std::vector<std::string>> bad = {
      {"bogus"},
      {"ls"},
      {"ls", cli.db, "group", "extra"},
      {"attrs", cli.db, "a", "--set", "novalue"},                       // KEY=JSON
      {"attrs", cli.db, "a", "--set", "=1"},                            // an empty key
      {"rm", cli.db, "a", "--recursive=yes"},
      {"create", cli.db, "a", "--shape", "3"},                          // --dtype missing
      {"create", cli.db, "a", "--dtype", "f8"},                          // --shape missing
      {"create", cli.db, "a", "--dtype", "O", "--shape", "3"},           // object dtype
      {"create", cli.db, "a", "--dtype", "f3", "--shape", "3"},          // no such size
      {"create", cli.db, "a", "--dtype", "<U5", "--shape", "3"},         // strings
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3,-1"},       // negative extent
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3,x"},        // not a number
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3,,4"},       // empty extent
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "4611686018427387904,4"},  // too large
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3", "--order", "X"},
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3", "--block-size", "1000"},
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3", "--block-size", "2G"},
      {"create", cli.db, "a", "--dtype", "f8", "--shape", "3", "--bogus"},
      {"create", cli.db, "a", "--dtype", "f8", "--shape"},               // value missing
      {"--cache", "12X", "ls", cli.db},
      {"--cache", "0", "ls", cli.db},
      {"info", cli.db, "a", "--json=yes"},                               // a flag with a value
      {"export", cli.db, "a", "out.npy", "--rows", "5"},
      {"export", cli.db, "a", "out.npy", "--rows", "1:2:0"},
      {"cat", cli.db, "a", "--format", "xml"},
      {"head", cli.db, "a", "-n", "-3"},
      {"rename", cli.db, "a"},
      {"cp", cli.db, "a", "b", "c"},
      {"export", cli.db, "a", "out.npy", "--rows=a:b"},
      {"fill", cli.db, "a", "--value", "abc"},
      {"fill", cli.db, "a"},
      {"resize", cli.db, "a", "--shape", "-2"},
      {"ls", cli.db, "-x"},
  };
  for (const auto& args : bad) {
    CliResult r = cli(args);
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    CHECK_MESSAGE(r.code == 2, "bigarray" << cmd << "\n" << Describe(r));
    CHECK_MESSAGE(Contains(r.err, "bigarray: "), cmd);
  }
  CHECK_FALSE(std::filesystem::exists(cli.db));
}

TEST_CASE("create, ls, info; options as --opt value or --opt=value, global options anywhere") {
  Cli cli;
  cli.Ok({"create", cli.db, "temps", "--dtype", "f8", "--shape", "1000,24"});
  cli.Ok({"--no-progress", "create", cli.db, "counts", "--dtype=>i4", "--shape=0,5", "--order=F", "--cache", "4M"});
  cli.Ok({"create", "--block-size", "64K", cli.db, "flags", "--dtype", "b1", "--shape", "7"});
  cli.Ok({"create", cli.db, "scalar", "--dtype", "c16", "--shape="});
  CHECK(cli.Ok({"ls", cli.db}) ==
        "counts\t>i4\t(0, 5)\tF\t0\n"
        "flags\t|b1\t(7,)\tC\t7\n"
        "scalar\t<c16\t()\tC\t16\n"
        "temps\t<f8\t(1000, 24)\tC\t192000\n");

  CHECK(cli.Ok({"info", cli.db, "temps", "--json"}) ==
        "{\"name\": \"temps\", \"dtype\": \"<f8\", \"shape\": [1000, 24], \"order\": \"C\", \"ndim\": 2, "
        "\"itemsize\": 8, \"size\": 24000, \"nbytes\": 192000, \"block_size\": 2097152, \"blocks\": 1, "
        "\"blocks_stored\": 0, \"stored_bytes\": 0, \"attrs\": {}}\n");
  CHECK(cli.Ok({"info", cli.db, "flags", "--json"}).find("\"block_size\": 65536") != std::string::npos);
  CHECK(cli.Ok({"info", "--json", cli.db, "scalar"}).find("\"shape\": [], \"order\": \"C\", \"ndim\": 0") !=
        std::string::npos);
  CHECK(cli.Ok({"info", cli.db, "counts"}) ==
        "name: counts\ndtype: >i4\nshape: (0, 5)\norder: F\nndim: 2\nitemsize: 4\nsize: 0\nnbytes: 0\n"
        "block_size: 2097152\nblocks: 0\nblocks_stored: 0\nstored_bytes: 0\nattrs: {}\n");

  // -v logs to stderr (the library's and the tool's debug messages); stdout is unchanged.
  CliResult r = cli({"ls", cli.db, "-v"});
  CHECK_EXIT(r, 0);
  CHECK(Contains(r.err, "opened"));
  CHECK(Contains(r.out, "temps\t<f8"));

  SUBCASE("errors") {
    r = cli({"create", cli.db, "temps", "--dtype", "f8", "--shape", "3"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "already exists"));
    WriteFile(cli / "plain", "x");
    r = cli({"create", cli / "plain", "a", "--dtype", "f8", "--shape", "3"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "not a bigarray database"));
    r = cli({"create", cli.db, "", "--dtype", "f8", "--shape", "3"});
    CHECK_EXIT(r, 1);
  }
}

// Every byte sequence is valid UTF-8 (RFC 3629).
bool ValidUtf8(const std::string& s) { return bigarray::InvalidUtf8At(s) == std::string_view::npos; }

TEST_CASE("names: ls and info quote them as ls quotes file names; JSON output is valid UTF-8 even for a name that is not") {
  // Regression: ls and info printed names raw (a tab split ls's columns, a newline its lines, an
  // escape sequence reached the terminal), and info --json wrote a name's bytes raw. Names must
  // now be UTF-8, but a database written before may hold one that is not (built here below the
  // library).
  Cli cli;
  for (const char* name : {"plain", "a\tb", "n\nl", "e\x1b[31mred", "it's", "x"}) {
    cli.Ok({"create", cli.db, name, "--dtype", "i1", "--shape", "3"});
  }
  CHECK_EXIT(cli({"create", cli.db, "bad\xff", "--dtype", "i1", "--shape", "3"}), 1);
  RenameInCatalog(cli.db, "x", "old\xff\tname");
  CHECK(cli.Ok({"ls", cli.db}) ==
        "'a'$'\\t''b'\t|i1\t(3,)\tC\t3\n"
        "'e'$'\\033''[31mred'\t|i1\t(3,)\tC\t3\n"
        "\"it's\"\t|i1\t(3,)\tC\t3\n"
        "'n'$'\\n''l'\t|i1\t(3,)\tC\t3\n"
        "'old'$'\\377\\t''name'\t|i1\t(3,)\tC\t3\n"
        "plain\t|i1\t(3,)\tC\t3\n");
  CHECK(cli.Ok({"info", cli.db, "n\nl"}).starts_with("name: 'n'$'\\n''l'\ndtype: |i1\n"));
  const std::string json = cli.Ok({"info", cli.db, "old\xff\tname", "--json"});
  CHECK(json.starts_with("{\"name\": \"old\\udcff\\u0009name\", \"dtype\": \"|i1\""));
  CHECK(ValidUtf8(json));
}

TEST_CASE("a missing database is an error for every command but create and import, and is not created") {
  Cli cli;
  WriteFile(cli / "a.npy", ReadFile(Fixture("f8_c.npy")));
  const std::vector<std::vector<std::string>> commands = {
      {"ls", cli.db},
      {"info", cli.db},
      {"info", cli.db, "a"},
      {"export", cli.db, "a", cli / "out.npy"},
      {"append", cli.db, "a", cli / "a.npy"},
      {"resize", cli.db, "a", "--shape", "3"},
      {"fill", cli.db, "a", "--value", "1"},
      {"rm", cli.db, "a"},
      {"stats", cli.db, "a"},
      {"stats", cli.db},
      {"verify", cli.db},
      {"compact", cli.db},
  };
  for (const auto& args : commands) {
    CliResult r = cli(args);
    CHECK_MESSAGE(r.code == 1, args[0] << ": " << Describe(r));
    CHECK_MESSAGE(Contains(r.err, "no bigarray database at " + cli.db), args[0] << ": " << r.err);
  }
  CHECK_FALSE(std::filesystem::exists(cli.db));
  CHECK_FALSE(std::filesystem::exists(cli / "out.npy"));
}

TEST_CASE("an unknown array is an error naming it") {
  Cli cli;
  cli.Ok({"create", cli.db, "a", "--dtype", "f8", "--shape", "3"});
  WriteFile(cli / "a.npy", ReadFile(Fixture("f8_c.npy")));
  const std::vector<std::vector<std::string>> commands = {
      {"info", cli.db, "nope"},
      {"export", cli.db, "nope", cli / "out.npy"},
      {"append", cli.db, "nope", cli / "a.npy"},
      {"resize", cli.db, "nope", "--shape", "3"},
      {"fill", cli.db, "nope", "--value", "1"},
      {"rm", cli.db, "nope"},
      {"stats", cli.db, "nope"},
  };
  for (const auto& args : commands) {
    CliResult r = cli(args);
    CHECK_MESSAGE(r.code == 1, args[0] << ": " << Describe(r));
    CHECK_MESSAGE(Contains(r.err, "no array named 'nope'"), args[0] << ": " << r.err);
  }
  CHECK_FALSE(std::filesystem::exists(cli / "out.npy"));
}

TEST_CASE("import then export gives back the same .npy bytes, for every dtype, order and byte order") {
  Cli cli;
  const std::vector<std::string> fixtures = {
      "f8_c",   "f8_f",   "i4_be",  "f4_be_f", "all_b1", "all_i1", "all_i2", "all_i4", "all_i8", "all_u1",
      "all_u2", "all_u4", "all_u8", "all_f2",  "all_f4", "all_f8", "all_c8", "all_c16", "empty", "scalar"};
  for (const std::string& name : fixtures) {
    cli.Ok({"import", cli.db, name, Fixture(name + ".npy"), "--block-size", "4096"});
    const std::string out = cli / (name + ".out.npy");
    cli.Ok({"export", cli.db, name, out});
    CHECK_MESSAGE(ReadFile(out) == ReadFile(Fixture(name + ".npy")), name);
  }
  CHECK(Contains(cli.Ok({"info", cli.db, "i4_be"}), "dtype: >i4\nshape: (4, 3)\norder: C\n"));
  CHECK(Contains(cli.Ok({"info", cli.db, "f8_f"}), "dtype: <f8\nshape: (3, 4)\norder: F\n"));
  // Versions 2.0 and 3.0 are read; the export is version 1.0 with the same data.
  for (const std::string name : {"v2", "v3"}) {
    cli.Ok({"import", cli.db, name, Fixture(name + ".npy")});
    cli.Ok({"export", cli.db, name, cli / "v.npy"});
    const Npy in = LoadNpy(Fixture(name + ".npy")), out = LoadNpy(cli / "v.npy");
    CHECK(in.header.major_version == (name == "v2" ? 2 : 3));
    CHECK(out.header.major_version == 1);
    CHECK(out.header.shape == in.header.shape);
    CHECK(out.data == in.data);
  }
  CHECK(cli.Ok({"verify", cli.db}).starts_with(cli.db + ": ok, 22 arrays"));
}

TEST_CASE("import into the other order: the same values, transposed in memory") {
  Cli cli;
  cli.Ok({"import", cli.db, "f", Fixture("f8_c.npy"), "--order", "F"});
  CHECK(Contains(cli.Ok({"info", cli.db, "f"}), "order: F"));
  cli.Ok({"export", cli.db, "f", cli / "f.npy"});
  CHECK(ReadFile(cli / "f.npy") == ReadFile(Fixture("f8_f.npy")));
  cli.Ok({"import", cli.db, "c", cli / "f.npy", "--order=C"});
  cli.Ok({"export", cli.db, "c", cli / "c.npy"});
  CHECK(ReadFile(cli / "c.npy") == ReadFile(Fixture("f8_c.npy")));
}

TEST_CASE("import: an existing name needs --replace; a bad file changes nothing") {
  Cli cli;
  cli.Ok({"import", cli.db, "a", Fixture("f8_c.npy")});
  CliResult r = cli({"import", cli.db, "a", Fixture("i4_be.npy")});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "already exists"));
  CHECK(Contains(r.err, "--replace"));
  // Same kind of array: replaced in place; another dtype: dropped and created. Repeated, as
  // array ids are random (see RestoreLostName in cli.cc).
  for (int i = 0; i < 6; ++i) {
    const std::string file = i % 2 ? "f8_f" : "i4_be";
    cli.Ok({"import", cli.db, "a", Fixture(file + ".npy"), "--replace"});
    cli.Ok({"export", cli.db, "a", cli / "a.npy"});
    CHECK_MESSAGE(ReadFile(cli / "a.npy") == ReadFile(Fixture(file + ".npy")), i);
    cli.Ok({"import", cli.db, "a", Fixture("f8_c.npy"), "--replace"});  // f8_f -> f8_c: in place
    cli.Ok({"export", cli.db, "a", cli / "a.npy"});
    CHECK(ReadFile(cli / "a.npy") == ReadFile(Fixture("f8_c.npy")));
  }
  const std::string before = cli.Ok({"ls", cli.db});
  CHECK(before == "a\t<f8\t(3, 4)\tC\t96\n");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"bad_truncated.npy", "truncated"},
      {"bad_trailing.npy", "unexpected bytes after the data"},
      {"bad_magic.npy", "not a .npy file"},
      {"bad_empty.npy", "not a .npy file"},
      {"bad_version.npy", "format version 4.0"},
      {"bad_header_len.npy", "truncated"},
      {"bad_dict.npy", "unexpected key 'extra'"},
      {"bad_shape_negative.npy", "non-negative integers"},
      {"bad_shape_overflow.npy", "larger than 2^63 bytes"},
      {"bad_dtype_unicode.npy", "'<U5'"},
      {"bad_dtype_structured.npy", "structured dtypes"},
      {"no_such_file.npy", "no file"},
  };
  for (const auto& item : bad) {
    const auto& file = item.first;
    const auto& why = item.second;
    for (const auto& args : {std::vector<std::string>{"import", cli.db, "b", Fixture(file)},
                             std::vector<std::string>{"import", cli.db, "a", Fixture(file), "--replace"}}) {
      r = cli(args);
      CHECK_MESSAGE(r.code == 1, file << ": " << Describe(r));
      CHECK_MESSAGE(Contains(r.err, why), file << ": " << r.err);
      CHECK_MESSAGE(Contains(r.err, Fixture(file)), file << ": the message names the file: " << r.err);
    }
  }
  CHECK(cli.Ok({"ls", cli.db}) == before);
  cli.Ok({"export", cli.db, "a", cli / "a.npy"});
  CHECK(ReadFile(cli / "a.npy") == ReadFile(Fixture("f8_c.npy")));
}

TEST_CASE("a file ending early through a pipe: an error, and nothing is written") {
  Cli cli;
  signal(SIGPIPE, SIG_IGN);
  const std::string fifo = cli / "fifo";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  cli.Ok({"create", cli.db, "keep", "--dtype", "i1", "--shape", "1"});
  CliProcess p({"import", cli.db, "a", fifo}, cli.tmp.path());
  const std::string good = ReadFile(Fixture("f8_c.npy"));
  {
    std::ofstream f(fifo, std::ios::binary);
    f << good.substr(0, good.size() - 8);
  }
  CliResult r = p.Wait();
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "truncated"));
  CHECK(cli.Ok({"ls", cli.db}) == "keep\t|i1\t(1,)\tC\t1\n");
}

TEST_CASE("export refuses an output inside the database directory or that is one of its files") {
  // Regression: `export DB a DB/data.mdb` renamed the .npy file over data.mdb: the database was
  // gone.
  Cli cli;
  cli.Ok({"import", cli.db, "c", Fixture("f8_c.npy")});
  const std::string data = ReadFile(cli.db + "/data.mdb");
  REQUIRE(symlink(cli.db.c_str(), (cli / "alias").c_str()) == 0);
  REQUIRE(mkdir((cli.db + "/sub").c_str(), 0755) == 0);
  REQUIRE(link((cli.db + "/data.mdb").c_str(), (cli / "hardlink").c_str()) == 0);
  REQUIRE(symlink((cli.db + "/lock.mdb").c_str(), (cli / "lock-link").c_str()) == 0);
  const std::string dir_name = std::filesystem::path(cli.db).filename();
  struct Case {
    std::string out, why;
  };
  for (const Case& c : std::vector<Case>{
           {cli.db + "/data.mdb", "a file of the database being exported from"},
           {cli.db + "/lock.mdb", "a file of the database being exported from"},
           {cli.db + "/x.npy", "is inside the database directory"},
           {cli.db + "/sub/x.npy", "is inside the database directory"},
           {cli / "alias/data.mdb", "a file of the database being exported from"},
           {cli / "alias/new.npy", "is inside the database directory"},
           {cli.db + "/../" + dir_name + "/y.npy", "is inside the database directory"},
           {cli / "hardlink", "a file of the database being exported from"},
           {cli / "lock-link", "a file of the database being exported from"}}) {
    CliResult r = cli({"export", cli.db, "c", c.out});
    CHECK_EXIT(r, 1);
    CHECK_MESSAGE(Contains(r.err, c.why), Describe(r));
  }
  CHECK(ReadFile(cli.db + "/data.mdb") == data);
  CHECK_FALSE(std::filesystem::exists(cli.db + "/x.npy"));
  CHECK_FALSE(std::filesystem::exists(cli.db + "/sub/x.npy"));
  cli.Ok({"ls", cli.db});
  cli.Ok({"export", cli.db, "c", cli / "fine.npy"});  // beside the database is fine
  CHECK(SameFiles(cli / "fine.npy", Fixture("f8_c.npy")));
}

TEST_CASE("export --rows: Python slice semantics along axis 0") {
  Cli cli;
  cli.Ok({"import", cli.db, "c", Fixture("f8_c.npy")});
  cli.Ok({"import", cli.db, "f", Fixture("f8_f.npy")});
  cli.Ok({"import", cli.db, "s", Fixture("scalar.npy")});
  struct Case {
    std::vector<std::string> rows;  // the option as given
    int64_t start, stop;            // the rows it selects of 3
  };
  const std::vector<Case> cases = {
      {{"--rows", "1:3"}, 1, 3},   {{"--rows", ":2"}, 0, 2},      {{"--rows", "1:"}, 1, 3},
      {{"--rows", ":"}, 0, 3},     {{"--rows=-1:"}, 2, 3},        {{"--rows", "-2:-1"}, 1, 2},
      {{"--rows", "-5:"}, 0, 3},   {{"--rows", ":100"}, 0, 3},    {{"--rows", "2:1"}, 2, 2},
      {{"--rows", "7:9"}, 3, 3},   {{"--rows=-100:-50"}, 0, 0},
  };
  for (const Case& c : cases) {
    for (const std::string array : {"c", "f"}) {
      std::vector<std::string> args = {"export", cli.db, array, cli / "rows.npy"};
      args.insert(args.end(), c.rows.begin(), c.rows.end());
      cli.Ok(args);
      const Npy n = LoadNpy(cli / "rows.npy");
      CHECK(n.header.fortran_order == (array == "f"));
      REQUIRE(n.header.shape == std::vector<int64_t>{c.stop - c.start, 4});
      const std::vector<double> v = Doubles(n);
      const int64_t rows = c.stop - c.start;
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < 4; ++j) {
          const double got = array == "c" ? v[i * 4 + j] : v[j * rows + i];
          CHECK_MESSAGE(got == ((c.start + i) * 4 + j) / 4.0, c.rows.back() << " " << array);
        }
      }
    }
  }
  CliResult r = cli({"export", cli.db, "s", cli / "s.npy", "--rows", "0:1"});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "0-d"));
  // An export into a directory that does not exist fails and leaves nothing behind.
  r = cli({"export", cli.db, "c", cli / "no/such/dir.npy"});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "no/such/dir.npy"));
}

TEST_CASE("append: C arrays along axis 0, F arrays along the last axis, exact casts only") {
  Cli cli;
  cli.Ok({"import", cli.db, "c", Fixture("f8_c.npy")});
  cli.Ok({"append", cli.db, "c", Fixture("rows_f8.npy")});   // (2, 4) of 7.5
  cli.Ok({"append", cli.db, "c", Fixture("rows_i2.npy")});   // (1, 4) of i2: cast to f8
  WriteFile(cli / "none.npy", npy::FormatNpyHeader(DType::Of<double>(), false, {0, 4}));
  cli.Ok({"append", cli.db, "c", cli / "none.npy"});  // no rows: nothing changes
  CHECK(Contains(cli.Ok({"info", cli.db, "c"}), "shape: (6, 4)\n"));
  cli.Ok({"export", cli.db, "c", cli / "c.npy"});
  std::vector<double> v = Doubles(LoadNpy(cli / "c.npy"));
  REQUIRE(v.size() == 24);
  for (int i = 0; i < 12; ++i) CHECK(v[i] == i / 4.0);
  for (int i = 12; i < 20; ++i) CHECK(v[i] == 7.5);
  CHECK(v[20] == 1);
  CHECK(v[21] == -2);
  CHECK(v[22] == 3);
  CHECK(v[23] == -4);

  cli.Ok({"import", cli.db, "f", Fixture("f8_f.npy")});
  cli.Ok({"append", cli.db, "f", Fixture("cols_f8.npy")});  // (3, 1): a column
  CHECK(Contains(cli.Ok({"info", cli.db, "f"}), "shape: (3, 5)\norder: F\n"));
  cli.Ok({"export", cli.db, "f", cli / "f.npy"});
  v = Doubles(LoadNpy(cli / "f.npy"));  // F order: column by column
  for (int j = 0; j < 4; ++j) {
    for (int i = 0; i < 3; ++i) CHECK(v[j * 3 + i] == (i * 4 + j) / 4.0);
  }
  for (int i = 0; i < 3; ++i) CHECK(v[12 + i] == 100 + i);

  const std::string before = cli.Ok({"ls", cli.db});
  CliResult r = cli({"append", cli.db, "c", Fixture("rows_bad_shape.npy")});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "(2, 5)"));
  CHECK(Contains(r.err, "except along axis 0"));
  r = cli({"append", cli.db, "f", Fixture("rows_f8.npy")});  // (2, 4) onto (3, 5) F: axis 1
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "except along axis 1"));
  r = cli({"append", cli.db, "c", Fixture("rows_i8.npy")});  // i8 -> f8 is not exact
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "<i8, which does not convert exactly to <f8"));
  r = cli({"append", cli.db, "c", Fixture("bad_truncated.npy")});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "truncated"));
  cli.Ok({"import", cli.db, "s", Fixture("scalar.npy")});
  r = cli({"append", cli.db, "s", Fixture("scalar.npy")});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "0-d"));
  CHECK(cli.Ok({"ls", cli.db}) == before + "s\t<f8\t()\tC\t8\n");
  cli.Ok({"export", cli.db, "c", cli / "c2.npy"});
  CHECK(ReadFile(cli / "c2.npy") == ReadFile(cli / "c.npy"));

  SUBCASE("either byte order, and a smaller item size of the same kind") {
    cli.Ok({"create", cli.db, "i", "--dtype", "<i8", "--shape", "0,3"});
    cli.Ok({"append", cli.db, "i", Fixture("i4_be.npy")});  // >i4 (4, 3)
    cli.Ok({"append", cli.db, "i", Fixture("all_u2.npy")});  // u2 (2, 3) -> i8
    cli.Ok({"export", cli.db, "i", cli / "i.npy"});
    const Npy n = LoadNpy(cli / "i.npy");
    REQUIRE(n.header.shape == std::vector<int64_t>{6, 3});
    std::vector<int64_t> x(18);
    std::memcpy(x.data(), n.data.data(), n.data.size());
    for (int k = 0; k < 12; ++k) CHECK(x[k] == k - 6);
    for (int k = 0; k < 6; ++k) CHECK(x[12 + k] == 65535 - 200 + 37 * k);
  }
}

TEST_CASE("resize keeps the flat order and zero-fills; fill sets values, whole or by rows") {
  Cli cli;
  cli.Ok({"import", cli.db, "c", Fixture("f8_c.npy")});
  cli.Ok({"resize", cli.db, "c", "--shape", "2,8"});
  cli.Ok({"resize", cli.db, "c", "--shape=20"});
  cli.Ok({"export", cli.db, "c", cli / "c.npy"});
  Npy n = LoadNpy(cli / "c.npy");
  CHECK(n.header.shape == std::vector<int64_t>{20});
  std::vector<double> v = Doubles(n);
  for (int i = 0; i < 20; ++i) CHECK(v[i] == (i < 12 ? i / 4.0 : 0.0));
  cli.Ok({"resize", cli.db, "c", "--shape", "5"});
  cli.Ok({"resize", cli.db, "c", "--shape", "2,4"});
  cli.Ok({"export", cli.db, "c", cli / "c.npy"});
  v = Doubles(LoadNpy(cli / "c.npy"));
  for (int i = 0; i < 8; ++i) CHECK(v[i] == (i < 5 ? i / 4.0 : 0.0));

  cli.Ok({"fill", cli.db, "c", "--value", "-1.5", "--rows", "1:"});
  cli.Ok({"fill", cli.db, "c", "--value=2", "--rows=-2:-1"});
  cli.Ok({"export", cli.db, "c", cli / "c.npy"});
  v = Doubles(LoadNpy(cli / "c.npy"));
  for (int i = 0; i < 8; ++i) CHECK(v[i] == (i < 4 ? 2.0 : -1.5));
  cli.Ok({"fill", cli.db, "c", "--value", "nan"});
  cli.Ok({"export", cli.db, "c", cli / "c.npy"});
  for (double x : Doubles(LoadNpy(cli / "c.npy"))) CHECK(std::isnan(x));

  // Values are checked against the dtype; a bad one changes nothing.
  cli.Ok({"create", cli.db, "i", "--dtype", ">i8", "--shape", "3", "--order", "F"});
  cli.Ok({"fill", cli.db, "i", "--value", "9223372036854775807"});
  cli.Ok({"fill", cli.db, "i", "--value", "-9223372036854775808", "--rows", "2:"});
  cli.Ok({"fill", cli.db, "i", "--value", "1e3", "--rows", ":1"});
  cli.Ok({"export", cli.db, "i", cli / "i.npy"});
  n = LoadNpy(cli / "i.npy");
  CHECK(n.header.dtype.str() == ">i8");
  CHECK(n.data == std::string("\0\0\0\0\0\0\x03\xe8\x7f\xff\xff\xff\xff\xff\xff\xff\x80\0\0\0\0\0\0\0", 24));
  for (const auto& item : std::vector<std::pair<std::string, std::string>>{
           {"9223372036854775808", "out of range"}, {"2.5", "not an integer"}, {"1+1j", "imaginary"},
           {"nan", "not an integer"}}) {
    const auto& value = item.first;
    const auto& why = item.second;
    CliResult r = cli({"fill", cli.db, "i", "--value", value});
    CHECK_MESSAGE(r.code == 1, value << ": " << Describe(r));
    CHECK_MESSAGE(Contains(r.err, why), value << ": " << r.err);
    CHECK_MESSAGE(Contains(r.err, "array 'i'"), r.err);
  }
  cli.Ok({"create", cli.db, "u", "--dtype", "u1", "--shape", "2"});
  CHECK(cli({"fill", cli.db, "u", "--value", "256"}).code == 1);
  CHECK(cli({"fill", cli.db, "u", "--value", "-1"}).code == 1);
  cli.Ok({"fill", cli.db, "u", "--value", "255"});
  cli.Ok({"create", cli.db, "h", "--dtype", "f2", "--shape", "2"});
  CHECK(cli({"fill", cli.db, "h", "--value", "1e6"}).code == 1);  // overflows float16
  cli.Ok({"fill", cli.db, "h", "--value", "-inf"});
  cli.Ok({"create", cli.db, "z", "--dtype", "c8", "--shape", "2"});
  cli.Ok({"fill", cli.db, "z", "--value", "(1.5-2j)"});
  cli.Ok({"export", cli.db, "z", cli / "z.npy"});
  n = LoadNpy(cli / "z.npy");
  float z[4];
  std::memcpy(z, n.data.data(), 16);
  CHECK(z[0] == 1.5f);
  CHECK(z[1] == -2.0f);
  cli.Ok({"create", cli.db, "b", "--dtype", "b1", "--shape", "3"});
  cli.Ok({"fill", cli.db, "b", "--value", "true", "--rows", "1:"});
  cli.Ok({"export", cli.db, "b", cli / "b.npy"});
  CHECK(LoadNpy(cli / "b.npy").data == std::string("\0\1\1", 3));
  cli.Ok({"create", cli.db, "s", "--dtype", "f4", "--shape", ""});
  cli.Ok({"fill", cli.db, "s", "--value", "3"});
  CHECK(cli({"fill", cli.db, "s", "--value", "3", "--rows", ":"}).code == 1);  // 0-d: no rows

  CliResult r = cli({"resize", cli.db, "c", "--shape", "2305843009213693952,2"});  // 2^63 bytes of f8
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "array 'c'"));
}

TEST_CASE("attrs: set, show, delete, for an array, a group and the database; info shows them") {
  Cli cli;
  cli.Ok({"create", cli.db, "temps", "--dtype", "f8", "--shape", "10"});
  CHECK(cli.Ok({"attrs", cli.db, "temps"}).empty());
  CHECK(cli.Ok({"attrs", cli.db, "temps", "--json"}) == "{}\n");
  CHECK(cli.Ok({"attrs", cli.db, "temps", "--set", "units=\"K\"", "--set=valid_range=[0, 400]", "--set",
                "note={\"a\": null, \"b=c\": true}"})
            .empty());
  CHECK(cli.Ok({"attrs", cli.db, "temps"}) ==
        "note: {\"a\": null, \"b=c\": true}\nunits: \"K\"\nvalid_range: [0, 400]\n");
  CHECK(cli.Ok({"attrs", cli.db, "temps", "--json"}) ==
        "{\"note\": {\"a\": null, \"b=c\": true}, \"units\": \"K\", \"valid_range\": [0, 400]}\n");
  CHECK(cli.Ok({"info", cli.db, "temps"}).ends_with(
      "attrs: {\"note\": {\"a\": null, \"b=c\": true}, \"units\": \"K\", \"valid_range\": [0, 400]}\n"));
  CHECK(Contains(cli.Ok({"info", cli.db, "temps", "--json"}), "\"blocks_stored\": 0, \"stored_bytes\": 0, \"attrs\": {\"note\": "));
  // Deletions first, then settings; the attributes follow a rename.
  cli.Ok({"attrs", cli.db, "temps", "--set", "units=\"degC\"", "--delete", "note", "--delete", "units"});
  cli.Ok({"rename", cli.db, "temps", "runs/temps"});
  CHECK(cli.Ok({"attrs", cli.db, "runs/temps"}) == "units: \"degC\"\nvalid_range: [0, 400]\n");
  // The database's and a group's.
  cli.Ok({"attrs", cli.db, "--set", "title=\"weather\""});
  cli.Ok({"attrs", cli.db, "runs/", "--set", "site=7"});
  CHECK(cli.Ok({"attrs", cli.db}) == "title: \"weather\"\n");
  CHECK(cli.Ok({"attrs", cli.db, "runs/"}) == "site: 7\n");
  CHECK(Contains(cli.Ok({"info", cli.db}), "\nattrs: {\"title\": \"weather\"}\nlive_bytes: "));
  CHECK(Contains(cli.Ok({"info", cli.db, "--json"}), "\"attrs\": {\"title\": \"weather\"}, \"arrays\": {"));

  SUBCASE("errors: nothing is written") {
    CliResult r = cli({"attrs", cli.db, "runs/temps", "--set", "units=K"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "array 'runs/temps' attribute 'units': the value is not JSON"));
    CHECK(Contains(r.err, "a string needs quotes"));
    r = cli({"attrs", cli.db, "runs/temps", "--set", "ok=1", "--delete", "missing"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "has no attribute 'missing'"));
    r = cli({"attrs", cli.db, "nope"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "no array named 'nope'"));
    CHECK(!Contains(r.err, "is a group"));
    r = cli({"attrs", cli.db, "runs"});  // a group, named as an array
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "'runs' is a group: name it 'runs/' for the group's attributes"));
    r = cli({"attrs", cli.db, std::string(300, 'g') + "/", "--set", "k=1"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "group name 'ggg"));
    CHECK(Contains(r.err, "at most 253 bytes"));
    r = cli({"attrs", cli.db, "runs/", "--set", "k\xff=1"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "UTF-8"));
    r = cli({"attrs", cli.db, "runs/", "--set", "k=\"\xff\""});
    CHECK_EXIT(r, 1);
    CHECK(!Contains(r.err, "a string needs quotes"));
    r = cli({"attrs", cli.db, "runs/temps", "--set", "big=\"" + std::string(70000, 'x') + "\""});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "limit"));
    CHECK(cli.Ok({"attrs", cli.db, "runs/temps"}) == "units: \"degC\"\nvalid_range: [0, 400]\n");
  }
}

TEST_CASE("ls GROUP lists one level, sub-groups with a '/'; rm -r drops a group") {
  Cli cli;
  for (const char* name : {"runs/2026/t", "runs/2026/p", "runs/2025/t", "runs/notes", "runs", "top"}) {
    cli.Ok({"create", cli.db, name, "--dtype", "i2", "--shape", "3"});
  }
  CHECK(cli.Ok({"ls", cli.db}) == "runs\t<i2\t(3,)\tC\t6\nruns/\ntop\t<i2\t(3,)\tC\t6\n");
  CHECK(cli.Ok({"ls", cli.db, "runs"}) == "2025/\n2026/\nnotes\t<i2\t(3,)\tC\t6\n");
  CHECK(cli.Ok({"ls", cli.db, "/runs/2026"}) == "p\t<i2\t(3,)\tC\t6\nt\t<i2\t(3,)\tC\t6\n");
  CHECK(cli.Ok({"ls", cli.db, "runs/", "-r"}) ==
        "2025/t\t<i2\t(3,)\tC\t6\n2026/p\t<i2\t(3,)\tC\t6\n2026/t\t<i2\t(3,)\tC\t6\nnotes\t<i2\t(3,)\tC\t6\n");
  CliResult r = cli({"ls", cli.db, "nothing"});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "no group 'nothing'"));
  r = cli({"create", cli.db, "/abs", "--dtype", "i2", "--shape", "3"});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "'/' separates groups"));

  r = cli({"rm", cli.db, "runs/2026"});  // a group, without -r
  CHECK_EXIT(r, 1);
  cli.Ok({"rm", cli.db, "runs/2026", "-r"});
  CHECK(cli.Ok({"ls", cli.db, "runs"}) == "2025/\nnotes\t<i2\t(3,)\tC\t6\n");
  cli.Ok({"rm", "-r", cli.db, "runs"});  // the array runs and the group runs
  CHECK(cli.Ok({"ls", cli.db, "-r"}) == "top\t<i2\t(3,)\tC\t6\n");
  r = cli({"rm", cli.db, "-r", "runs"});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "no array or group named 'runs'"));
  cli.Ok({"rm", cli.db, "-r", "top"});  // an array alone
  CHECK(cli.Ok({"ls", cli.db}).empty());
}

TEST_CASE("rm deletes an array and its blocks") {
  Cli cli;
  cli.Ok({"import", cli.db, "a", Fixture("f8_c.npy")});
  cli.Ok({"import", cli.db, "b", Fixture("i4_be.npy")});
  cli.Ok({"rm", cli.db, "a"});
  CHECK(cli.Ok({"ls", cli.db}) == "b\t>i4\t(4, 3)\tC\t48\n");
  CliResult r = cli({"rm", cli.db, "a"});
  CHECK_EXIT(r, 1);
  CHECK(Contains(r.err, "no array named 'a'"));
  cli.Ok({"rm", cli.db, "b"});
  CHECK(cli.Ok({"ls", cli.db}).empty());
  CHECK(Contains(cli.Ok({"verify", cli.db}), "ok, 0 arrays"));
}

TEST_CASE("stats: count, min, max, mean, population std; JSON; empty, NaN, integers, complex") {
  Cli cli;
  cli.Ok({"import", cli.db, "c", Fixture("f8_c.npy")});  // 0, 0.25, ..., 2.75
  CHECK(cli.Ok({"stats", cli.db, "c", "--json"}) ==
        "{\"count\": 12, \"min\": 0, \"max\": 2.75, \"mean\": 1.375, \"std\": 0.8630131323836657}\n");
  CHECK(cli.Ok({"stats", cli.db, "c"}) ==
        "count: 12\nmin: 0\nmax: 2.75\nmean: 1.375\nstd: 0.8630131323836657\n");
  cli.Ok({"import", cli.db, "f", Fixture("f8_f.npy")});
  CHECK(cli.Ok({"stats", cli.db, "f", "--json"}) == cli.Ok({"stats", cli.db, "c", "--json"}));

  cli.Ok({"import", cli.db, "e", Fixture("empty.npy")});
  CHECK(cli.Ok({"stats", cli.db, "e", "--json"}) ==
        "{\"count\": 0, \"min\": null, \"max\": null, \"mean\": null, \"std\": null}\n");
  CHECK(cli.Ok({"stats", cli.db, "e"}) == "count: 0\nmin: n/a\nmax: n/a\nmean: n/a\nstd: n/a\n");

  cli.Ok({"import", cli.db, "i8", Fixture("all_i8.npy")});  // holds INT64_MIN and INT64_MAX
  CHECK(Contains(cli.Ok({"stats", cli.db, "i8", "--json"}),
                 "\"min\": -9223372036854775808, \"max\": 9223372036854775807"));
  cli.Ok({"import", cli.db, "u8", Fixture("all_u8.npy")});
  CHECK(Contains(cli.Ok({"stats", cli.db, "u8"}), "max: 18446744073709551600\n"));
  cli.Ok({"import", cli.db, "b", Fixture("all_b1.npy")});
  CHECK(cli.Ok({"stats", cli.db, "b", "--json"}) ==
        "{\"count\": 6, \"min\": 0, \"max\": 1, \"mean\": 0.5, \"std\": 0.5}\n");

  cli.Ok({"fill", cli.db, "c", "--value", "nan", "--rows", "1:2"});
  CHECK(cli.Ok({"stats", cli.db, "c", "--json"}) ==
        "{\"count\": 12, \"min\": NaN, \"max\": NaN, \"mean\": NaN, \"std\": NaN}\n");

  cli.Ok({"import", cli.db, "z", Fixture("all_c16.npy")});
  CliResult r = cli({"stats", cli.db, "z", "--json"});
  CHECK_EXIT(r, 1);
  CHECK(r.out.empty());
  CHECK(Contains(r.err, "complex"));
}

TEST_CASE("verify: sound databases pass; a damaged block or array record is reported, and the rest checked") {
  Cli cli;
  cli.Ok({"import", cli.db, "a", Fixture("f8_c.npy"), "--block-size", "4096"});
  cli.Ok({"create", cli.db, "big", "--dtype", "u1", "--shape", "5,4096", "--block-size", "4096"});
  cli.Ok({"fill", cli.db, "big", "--value", "7"});
  cli.Ok({"create", cli.db, "z", "--dtype", "f8", "--shape", "0"});
  CHECK(cli.Ok({"verify", cli.db}) == cli.db + ": ok, 3 arrays, 6 blocks checked\n");
  // --no-verify (Options::verify_reads = false) reads the same values; verify ignores it.
  for (const char* name : {"a", "big"}) {
    CHECK(cli.Ok({"--no-verify", "cat", cli.db, name}) == cli.Ok({"cat", cli.db, name}));
    CHECK(cli.Ok({"stats", cli.db, name, "--no-verify"}) == cli.Ok({"stats", cli.db, name}));
  }
  CHECK(cli.Ok({"verify", "--no-verify", cli.db}) == cli.db + ": ok, 3 arrays, 6 blocks checked\n");

  SUBCASE("a block") {
    DamageDatabase(cli.db, Damage::kBlock);  // the first block stored: of 'a' or of 'big'
    for (const bool no_verify : {false, true}) {
      CliResult v = no_verify ? cli({"--no-verify", "verify", cli.db}) : cli({"verify", cli.db});
      CHECK_EXIT(v, 1);
      CHECK_MESSAGE((v.out.starts_with("array 'a' block 0: Corruption") ||
                     v.out.starts_with("array 'big' block 0: Corruption")), v.out);
    }
    CliResult r = cli({"verify", cli.db});
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    CHECK(Contains(r.err, "1 damaged"));
    // Reading the damaged block elsewhere is an error too, not a crash.
    const bool in_a = r.out.starts_with("array 'a'");
    r = cli({"stats", cli.db, in_a ? "a" : "big"});
    CHECK_EXIT(r, 1);
    CHECK(Contains(r.err, "checksum"));
  }
  SUBCASE("an array record") {
    DamageDatabase(cli.db, Damage::kArrayRecord);
    CliResult r = cli({"verify", cli.db});
    CHECK_EXIT(r, 1);
    // The damaged record, then the array it describes, which cannot be read.
    CHECK_MESSAGE(std::count(r.out.begin(), r.out.end(), '\n') == 2, r.out);
    CHECK(r.out.starts_with(cli.db + ": Corruption: metadata record 'a/"));
    CHECK(Contains(r.out, "\narray '"));
    CHECK(Contains(r.err, "2 damaged"));
  }
}

TEST_CASE("a conflicting commit while the tool works: exit 3, and the tool wrote nothing") {
  // The tool reads its .npy from a pipe, so that the test can commit a conflicting change after
  // the tool has begun its transaction (it opens the database before reading any data) and
  // before it commits (which it does only after the last byte).
  Cli cli;
  signal(SIGPIPE, SIG_IGN);
  const std::string fifo = cli / "fifo";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  std::string data;
  {
    std::vector<double> values(100000);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i);
    data = npy::FormatNpyHeader(DType::Of<double>(), false, {100000}) +
           std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8);
  }
  auto feed = [&](const std::function<void()>& meanwhile) {
    std::ofstream f(fifo, std::ios::binary);
    // More than the pipe holds plus one chunk of the tool: when this returns, the tool is reading data.
    f.write(data.data(), 400000);
    f.flush();
    meanwhile();
    f.write(data.data() + 400000, static_cast<std::streamsize>(data.size() - 400000));
  };

  SUBCASE("import: another process creates the same name first") {
    CliProcess p({"--cache", "1M", "import", cli.db, "x", fifo}, cli.tmp.path());
    feed([&] { cli.Ok({"create", cli.db, "x", "--dtype", "i4", "--shape", "3"}); });
    CliResult r = p.Wait();
    CHECK_EXIT(r, 3);
    CHECK(Contains(r.err, "Conflict"));
    CHECK(Contains(r.err, "nothing was written"));
    CHECK(cli.Ok({"ls", cli.db}) == "x\t<i4\t(3,)\tC\t12\n");
  }
  SUBCASE("append: another process fills the same array first") {
    cli.Ok({"create", cli.db, "x", "--dtype", "f8", "--shape", "10"});
    CliProcess p({"--cache", "1M", "append", cli.db, "x", fifo}, cli.tmp.path());
    feed([&] { cli.Ok({"fill", cli.db, "x", "--value", "5"}); });
    CliResult r = p.Wait();
    CHECK_EXIT(r, 3);
    CHECK(Contains(r.err, "Conflict"));
    CHECK(cli.Ok({"stats", cli.db, "x", "--json"}) ==
          "{\"count\": 10, \"min\": 5, \"max\": 5, \"mean\": 5, \"std\": 0}\n");
  }
}

TEST_CASE("import and export stream: memory stays bounded by the cache, not the file") {
  Cli cli;
  // A 96 MiB file: 12 Mi float64 values in 3 columns. (The default block size: with small
  // blocks, the kernel's fault-around on LMDB's map adds file pages to the RSS.)
  const int64_t rows = 4 << 20, cols = 3;
  {
    auto w = npy::NpyWriter::Create(cli / "big.npy", DType::Of<double>(), false, {rows, cols});
    REQUIRE(w.ok());
    std::vector<double> chunk(cols * 65536);
    for (int64_t r0 = 0; r0 < rows; r0 += 65536) {
      for (size_t k = 0; k < chunk.size(); ++k) chunk[k] = static_cast<double>(r0 * cols + static_cast<int64_t>(k));
      REQUIRE(w->Write(std::as_bytes(std::span(chunk))).ok());
    }
    REQUIRE(w->Commit().ok());
  }
  // The cache is at least 8 blocks (16 MiB here); the tool's peak RSS must stay far below the
  // file's 96 MiB. Sanitizers add their own memory: the bound is checked without them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  const long max_rss_kb = 1l << 40;
#else
  const long max_rss_kb = 48 << 10;
#endif
  const std::vector<std::string> small = {"--cache", "4M", "--no-progress"};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), small.begin(), small.end());
    CliResult r = cli(args);
    REQUIRE_MESSAGE(r.code == 0, Describe(r));
    CHECK(r.max_rss_kb > 0);  // it was measured
    return r;
  };
  CliResult r = run({"import", cli.db, "big", cli / "big.npy"});
  CHECK_MESSAGE(r.max_rss_kb < max_rss_kb, "import: max RSS " << r.max_rss_kb << " KiB");
  r = run({"export", cli.db, "big", cli / "out.npy"});
  CHECK_MESSAGE(r.max_rss_kb < max_rss_kb, "export: max RSS " << r.max_rss_kb << " KiB");
  CHECK(SameFiles(cli / "out.npy", cli / "big.npy"));
  r = run({"stats", cli.db, "big", "--json"});
  CHECK(r.out.starts_with("{\"count\": 12582912, \"min\": 0, \"max\": 12582911, \"mean\": 6291455.5, \"std\": "));
  const double std = std::strtod(r.out.c_str() + r.out.find("\"std\": ") + 7, nullptr);
  CHECK(std == doctest::Approx(std::sqrt((static_cast<double>(rows * cols) * (rows * cols) - 1) / 12)).epsilon(1e-13));
  CHECK_MESSAGE(r.max_rss_kb < max_rss_kb, "stats: max RSS " << r.max_rss_kb << " KiB");
  r = run({"export", cli.db, "big", cli / "tail.npy", "--rows=-3:"});
  const std::vector<double> tail = Doubles(LoadNpy(cli / "tail.npy"));
  REQUIRE(tail.size() == 9);
  CHECK(tail[8] == static_cast<double>(rows * cols - 1));
  r = run({"verify", cli.db});
  CHECK(r.out == cli.db + ": ok, 1 arrays, 48 blocks checked\n");
}

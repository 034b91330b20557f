// The tool's parts, in process: argument parsing, value parsers, boxes, casts, scalars, streaming
// statistics and the exit codes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "args.h"
#include "bigarray/database.h"
#include "cli.h"
#include "json_text.h"
#include "shell_quote.h"
#include "stats.h"
#include "test_util.h"
#include "npy.h"
#include "transfer.h"

using namespace bigarray;
using namespace bigarray::cli;

namespace {

const OptionSpec kGlobals[] = {{"cache", 0, ValueKind::kByteSize}, {"verbose", 'v'}, {"help", 'h'}};
const CommandSpec kCommands[] = {
    {"make", {"DB", "NAME"}, {{"shape", 0, ValueKind::kShape, true}, {"rows", 0, ValueKind::kRows}, {"json"}}},
    {"ls", {"DB"}, {}},
};

Result<ParsedArgs> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "bigarray");
  return ParseArgs(static_cast<int>(args.size()), args.data(), kGlobals, kCommands);
}

}  // namespace

TEST_CASE("ParseArgs: positions, --opt value, --opt=value, globals anywhere, --") {
  auto p = Parse({"--cache", "4M", "make", "db", "--shape", "3,4", "x", "-v", "--rows=-5:"});
  REQUIRE_MESSAGE(p.ok(), p.status().ToString());
  CHECK(p->command->name == "make");
  CHECK(p->positionals == std::vector<std::string>{"db", "x"});
  CHECK(p->Value("cache") == "4M");
  CHECK(p->Value("shape") == "3,4");
  CHECK(p->Value("rows") == "-5:");
  CHECK(p->Flag("verbose"));
  CHECK_FALSE(p->Flag("json"));
  CHECK_FALSE(p->help);
  // The next argument is the value even when it begins with '-'.
  p = Parse({"make", "db", "x", "--shape", "3", "--rows", "-5:"});
  REQUIRE(p.ok());
  CHECK(p->Value("rows") == "-5:");
  p = Parse({"make", "--shape=2", "--", "db", "-x"});
  REQUIRE(p.ok());
  CHECK(p->positionals == std::vector<std::string>{"db", "-x"});
  p = Parse({"ls", "-h"});
  REQUIRE(p.ok());
  CHECK(p->help);  // help needs no positionals
  p = Parse({});
  REQUIRE(p.ok());
  CHECK(p->command == nullptr);

  for (const auto& bad : std::vector<std::vector<const char*>>{
           {"nope"}, {"ls"}, {"ls", "a", "b"}, {"make", "db", "x"}, {"make", "db", "x", "--shape"},
           {"make", "db", "x", "--shape", "a"}, {"make", "db", "x", "--shape", "3", "--json=1"},
           {"--shape", "3", "make", "db", "x"}, {"ls", "db", "--bogus"}, {"ls", "db", "-q"},
           {"ls", "db", "-vh"}, {"--cache", "1T", "ls", "db"}, {"make", "db", "x", "--shape", "3", "--rows", "1"}}) {
    std::string joined;
    for (const char* a : bad) joined += std::string(" ") + a;
    CHECK_MESSAGE(Parse(bad).status().code() == Code::kInvalidArgument, joined);
  }
}

TEST_CASE("JsonString: valid UTF-8 passes, invalid bytes become \\udcXX (Python's surrogateescape)") {
  // Regression: info --json wrote the raw bytes of a name that is not UTF-8: invalid JSON text.
  CHECK(JsonString("plain") == "\"plain\"");
  CHECK(JsonString("q\"b\\") == "\"q\\\"b\\\\\"");
  CHECK(JsonString("a\tb\n\x1b") == "\"a\\u0009b\\u000a\\u001b\"");
  CHECK(JsonString("temp\xc3\xa9rature \xf0\x9f\x8c\xa1") == "\"temp\xc3\xa9rature \xf0\x9f\x8c\xa1\"");
  CHECK(JsonString("\xff\xfe") == "\"\\udcff\\udcfe\"");
  CHECK(JsonString("ok\xc3") == "\"ok\\udcc3\"");                  // truncated sequence
  CHECK(JsonString("\xc3x") == "\"\\udcc3x\"");                    // bad continuation
  CHECK(JsonString("\xc0\xaf") == "\"\\udcc0\\udcaf\"");            // overlong '/'
  CHECK(JsonString("\xed\xa0\x80") == "\"\\udced\\udca0\\udc80\"");  // a UTF-16 surrogate
  CHECK(JsonString("\xf4\x90\x80\x80") == "\"\\udcf4\\udc90\\udc80\\udc80\"");  // past U+10FFFF
  CHECK(JsonString(std::string("a\0b", 3)) == "\"a\\u0000b\"");
}

TEST_CASE("ShellQuote: names as coreutils ls --quoting-style=shell-escape shows them; the shell reads them back") {
  // Regression: ls printed names raw, so a tab or newline broke its columns and lines, and an
  // escape sequence reached the terminal. The expected strings are what coreutils 9.1 prints.
  CHECK(ShellQuote("plain") == "plain");
  CHECK(ShellQuote("a,b:c@d%e+f-g.h_i/j") == "a,b:c@d%e+f-g.h_i/j");
  CHECK(ShellQuote("a#b~c") == "a#b~c");
  CHECK(ShellQuote("temp\xc3\xa9rature") == "temp\xc3\xa9rature");
  CHECK(ShellQuote("#c") == "'#c'");
  CHECK(ShellQuote("~home") == "'~home'");
  CHECK(ShellQuote("a b") == "'a b'");
  CHECK(ShellQuote("x$y") == "'x$y'");
  CHECK(ShellQuote("x=y") == "'x=y'");
  CHECK(ShellQuote("a\\b") == "'a\\b'");
  CHECK(ShellQuote("d\"q") == "'d\"q'");
  CHECK(ShellQuote("it's") == "\"it's\"");
  CHECK(ShellQuote("'") == "\"'\"");
  CHECK(ShellQuote("it's $HOME") == "'it'\\''s $HOME'");
  CHECK(ShellQuote("a\tb") == "'a'$'\\t''b'");
  CHECK(ShellQuote("n\nl") == "'n'$'\\n''l'");
  CHECK(ShellQuote("e\x1b[31mred") == "'e'$'\\033''[31mred'");
  CHECK(ShellQuote("mix \xff\t") == "'mix '$'\\377\\t'");
  CHECK(ShellQuote("\xff\xfe") == "$'\\377\\376'");
  CHECK(ShellQuote("c1\xc2\x85") == "'c1'$'\\302\\205'");  // U+0085, a C1 control
  CHECK(ShellQuote("") == "''");

  // Whatever the bytes, bash reads the quoted form back as the name (one bash for all names).
  std::mt19937 rng(1234);
  std::vector<std::string> names = {"a\tb", "it's $HOME", "\xff\xfe", "'", "''\\'", "e\x1b[31m", "\x7f"};
  for (int k = 0; k < 300; ++k) {
    std::string n(1 + rng() % 12, ' ');
    for (char& c : n) c = static_cast<char>(1 + rng() % 255);
    names.push_back(n);
  }
  bigarray::testing::TempDir dir;
  std::string script = "printf '%s\\0'";
  for (const std::string& n : names) script += " " + ShellQuote(n);
  {
    std::FILE* f = std::fopen((dir / "s.sh").c_str(), "w");
    REQUIRE(f);
    std::fwrite(script.data(), 1, script.size(), f);
    std::fclose(f);
  }
  std::FILE* p = popen(("bash " + dir / "s.sh").c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  REQUIRE(pclose(p) == 0);
  std::vector<std::string> back;
  for (size_t at = 0, nul; (nul = out.find('\0', at)) != std::string::npos; at = nul + 1) back.push_back(out.substr(at, nul - at));
  REQUIRE(back.size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) CHECK_MESSAGE(back[i] == names[i], ShellQuote(names[i]));
  for (const std::string& n : names) {
    const std::string q = ShellQuote(n);
    CHECK(q.find_first_of("\t\n\x1b") == std::string::npos);  // nothing that breaks a line or reaches the terminal
  }
}

TEST_CASE("value parsers") {
  CHECK(ParseByteSize("65536").value() == 65536);
  CHECK(ParseByteSize("64K").value() == 65536);
  CHECK(ParseByteSize("3m").value() == 3u << 20);
  CHECK(ParseByteSize("2G").value() == 2ull << 30);
  for (const char* bad : {"", "0", "K", "-1", "1.5G", "12X", "99999999999999999999", "8589934592G"}) {
    CHECK_MESSAGE(!ParseByteSize(bad).ok(), bad);
  }
  CHECK(ParseBlockSize("64K").value() == 65536);
  CHECK_FALSE(ParseBlockSize("1000").ok());
  CHECK_FALSE(ParseBlockSize("2G").ok());

  CHECK(ParseShape("3,4").value() == std::vector<int64_t>{3, 4});
  CHECK(ParseShape("(3, 4)").value() == std::vector<int64_t>{3, 4});
  CHECK(ParseShape("7").value() == std::vector<int64_t>{7});
  CHECK(ParseShape("(7,)").value() == std::vector<int64_t>{7});
  CHECK(ParseShape("0,5").value() == std::vector<int64_t>{0, 5});
  CHECK(ParseShape("").value().empty());
  CHECK(ParseShape("()").value().empty());
  for (const char* bad : {",", "3,,4", "-1", "3,a", "3.5", "(3", "99999999999999999999", "4611686018427387904,4",
                          "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"}) {
    CHECK_MESSAGE(!ParseShape(bad).ok(), bad);
  }

  CHECK(ParseOrder("F").value() == Order::kF);
  CHECK(ParseOrder("c").value() == Order::kC);
  CHECK_FALSE(ParseOrder("X").ok());

  Slice s = ParseRows("10:20").value();
  CHECK(s.start == 10);
  CHECK(s.stop == 20);
  s = ParseRows("-5:").value();
  CHECK(s.start == -5);
  CHECK_FALSE(s.stop.has_value());
  s = ParseRows(":").value();
  CHECK_FALSE(s.start.has_value());
  CHECK(s.step == 1);
  s = ParseRows("1:20:3").value();
  CHECK((s.start == 1 && s.stop == 20 && s.step == 3));
  s = ParseRows("::-2").value();
  CHECK((!s.start && !s.stop && s.step == -2));
  s = ParseRows("-1::").value();
  CHECK((s.start == -1 && !s.stop && s.step == 1));
  for (const char* bad : {"", "5", "1:2:0", "1:2:3:4", "::x", "::-9223372036854775808", "a:", ":b", "1.5:2"}) {
    CHECK_MESSAGE(!ParseRows(bad).ok(), bad);
  }

  CHECK(ParseCount("0").value() == 0);
  CHECK(ParseCount("25").value() == 25);
  for (const char* bad : {"", "-1", "x", "1.5", "99999999999999999999"}) CHECK_MESSAGE(!ParseCount(bad).ok(), bad);
  CHECK(ParsePrintFormat("text").value() == PrintFormat::kText);
  CHECK(ParsePrintFormat("csv").value() == PrintFormat::kCsv);
  CHECK(ParsePrintFormat("json").value() == PrintFormat::kJson);
  CHECK_FALSE(ParsePrintFormat("JSON").ok());

  Scalar v = ParseScalar("-12").value();
  CHECK(v.as_int64 == -12);
  CHECK_FALSE(v.as_uint64.has_value());
  v = ParseScalar("18446744073709551615").value();
  CHECK(v.as_uint64 == UINT64_MAX);
  CHECK_FALSE(v.as_int64.has_value());
  CHECK(ParseScalar("true").value().real == 1);
  CHECK(std::isnan(ParseScalar("nan").value().real));
  CHECK(ParseScalar("-inf").value().real == -INFINITY);
  v = ParseScalar("(1.5e2-2.5j)").value();
  CHECK(v.real == 150);
  CHECK(v.imag == -2.5);
  v = ParseScalar("-3j").value();
  CHECK(v.real == 0);
  CHECK(v.imag == -3);
  v = ParseScalar("1e-3+1E+2j").value();
  CHECK(v.real == 0.001);
  CHECK(v.imag == 100);
  for (const char* bad : {"", "abc", "1..2", "j", "1+j", "3 ", " 3", "1e999", "0x"}) {
    CHECK_MESSAGE(!ParseScalar(bad).ok(), bad);
  }
}

TEST_CASE("FlatRangeBoxes covers exactly the range, in order, in at most 2 * ndim boxes") {
  std::mt19937_64 rng(bigarray::testing::TestSeed("boxes"));
  for (int iter = 0; iter < 3000; ++iter) {
    const int ndim = static_cast<int>(rng() % 5);
    std::vector<int64_t> shape(ndim);
    int64_t size = 1;
    for (auto& d : shape) size *= (d = 1 + static_cast<int64_t>(rng() % 5));
    const bool fortran = rng() % 2;
    int64_t begin = static_cast<int64_t>(rng() % static_cast<uint64_t>(size + 1));
    int64_t end = static_cast<int64_t>(rng() % static_cast<uint64_t>(size + 1));
    if (begin > end) std::swap(begin, end);
    const auto boxes = FlatRangeBoxes(shape, fortran, begin, end);
    CHECK(boxes.size() <= static_cast<size_t>(std::max(1, 2 * ndim)));
    // Walk each box in the chunk's order; the flat indices must run from begin to end.
    const auto strides = ContiguousStrides(shape, 1, fortran);  // element strides
    int64_t next = begin;
    for (const Box& box : boxes) {
      REQUIRE(box.index.size() == shape.size());
      std::vector<int64_t> lo(ndim), n(ndim);
      int64_t count = 1;
      for (int k = 0; k < ndim; ++k) {
        if (const int64_t* i = std::get_if<int64_t>(&box.index[k])) {
          lo[k] = *i;
          n[k] = 1;
        } else {
          const Slice& sl = std::get<Slice>(box.index[k]);
          lo[k] = sl.start.value_or(0);
          n[k] = sl.stop.value_or(shape[k]) - lo[k];
        }
        count *= n[k];
      }
      CHECK(count == box.count);
      std::vector<int64_t> idx(ndim, 0);
      for (int64_t e = 0; e < count; ++e) {
        int64_t flat = 0;
        for (int k = 0; k < ndim; ++k) flat += (lo[k] + idx[k]) * strides[k];
        REQUIRE(flat == next);
        ++next;
        for (int j = 0; j < ndim; ++j) {  // advance in the chunk's order
          const int k = fortran ? j : ndim - 1 - j;
          if (++idx[k] < n[k]) break;
          idx[k] = 0;
        }
      }
    }
    CHECK(next == end);
  }
}

TEST_CASE("casts: exactly the documented ones, converting exactly") {
  auto d = [](const char* s) { return DType::Parse(s).value(); };
  for (const auto& item : std::vector<std::pair<const char*, const char*>>{
           {"<f8", ">f8"}, {"i2", "i8"}, {">i4", "<i8"}, {"f2", "f8"}, {"f4", "f8"}, {"c8", "c16"}, {"u4", "i8"},
           {"u1", "i2"}, {"i1", "f2"}, {"u2", "f4"}, {"i4", "f8"}, {"u4", "f8"}, {"b1", "b1"}, {"u1", "u8"}}) {
    const auto& from = item.first;
    const auto& to = item.second;
    CHECK_MESSAGE(CanCastSafely(d(from), d(to)), from << " -> " << to);
  }
  for (const auto& item : std::vector<std::pair<const char*, const char*>>{
           {"f8", "f4"}, {"i8", "f8"}, {"i4", "f4"}, {"u8", "i8"}, {"i4", "u8"}, {"i2", "f2"}, {"u4", "i4"},
           {"f8", "c16"}, {"b1", "i1"}, {"c16", "c8"}, {"i8", "i4"}, {"f4", "i8"}}) {
    const auto& from = item.first;
    const auto& to = item.second;
    CHECK_MESSAGE(!CanCastSafely(d(from), d(to)), from << " -> " << to);
  }
  // >i4 -> <i8, u2 -> f4, c8 -> >c16, and a byte swap of >c8.
  const uint8_t be[8] = {0xff, 0xff, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x02};
  int64_t wide[2];
  ConvertElements(d(">i4"), reinterpret_cast<const std::byte*>(be), d("<i8"), reinterpret_cast<std::byte*>(wide), 2);
  CHECK(wide[0] == -2);
  CHECK(wide[1] == 258);
  const uint16_t u[2] = {65535, 7};
  float f[2];
  ConvertElements(d("u2"), reinterpret_cast<const std::byte*>(u), d("f4"), reinterpret_cast<std::byte*>(f), 2);
  CHECK(f[0] == 65535.0f);
  CHECK(f[1] == 7.0f);
  const float c8[4] = {1.5f, -2.0f, 3.25f, 1e30f};
  std::byte c16[32];
  ConvertElements(d("<c8"), reinterpret_cast<const std::byte*>(c8), d(">c16"), c16, 2);
  CHECK(d(">f8").ToDouble(c16) == 1.5);
  CHECK(d(">f8").ToDouble(c16 + 8) == -2.0);
  CHECK(d(">f8").ToDouble(c16 + 24) == static_cast<double>(1e30f));
  std::byte swapped[16];
  ConvertElements(d(">c16"), c16, d("<c16"), swapped, 1);
  double parts[2];
  std::memcpy(parts, swapped, 16);
  CHECK(parts[0] == 1.5);
  CHECK(parts[1] == -2.0);
}

TEST_CASE("EncodeScalar: values must be representable") {
  auto encode = [](const char* value, const char* dtype) {
    std::vector<std::byte> e(16, std::byte{0xcc});
    Status st = EncodeScalar(ParseScalar(value).value(), DType::Parse(dtype).value(), e.data());
    return std::make_pair(st, e);
  };
  auto [st, e] = encode("-2", ">i2");
  CHECK(st.ok());
  CHECK(e[0] == std::byte{0xff});
  CHECK(e[1] == std::byte{0xfe});
  std::tie(st, e) = encode("18446744073709551615", "<u8");
  CHECK(st.ok());
  CHECK(e[7] == std::byte{0xff});
  CHECK(encode("-9223372036854775808", "i8").first.ok());
  CHECK(encode("127", "i1").first.ok());
  CHECK(encode("-128", "i1").first.ok());
  CHECK(encode("4e9", "u4").first.ok());
  CHECK(encode("-0", "u1").first.ok());
  for (const auto& item : std::vector<std::pair<const char*, const char*>>{
           {"128", "i1"}, {"-129", "i1"}, {"256", "u1"}, {"-1", "u8"}, {"1.5", "i4"}, {"nan", "i4"},
           {"inf", "u2"}, {"1+1j", "f8"}, {"1j", "i8"}, {"1e39", "f4"}, {"70000", "f2"}, {"1e39+1j", "c8"},
           {"9223372036854775808", "i8"}, {"1e20", "u8"}}) {
    const auto& value = item.first;
    const auto& dtype = item.second;
    CHECK_MESSAGE(encode(value, dtype).first.code() == Code::kInvalidArgument, value << " as " << dtype);
  }
  std::tie(st, e) = encode("2", "b1");
  CHECK(st.ok());
  CHECK(e[0] == std::byte{1});
  std::tie(st, e) = encode("1+2j", "<c8");
  CHECK(st.ok());
  float parts[2];
  std::memcpy(parts, e.data(), 8);
  CHECK(parts[0] == 1.0f);
  CHECK(parts[1] == 2.0f);
  CHECK(encode("inf", "f2").first.ok());
  CHECK(encode("nan", "c16").first.ok());
}

TEST_CASE("RunningStats is exact for integers and stable for floats far from zero") {
  std::mt19937_64 rng(bigarray::testing::TestSeed("stats"));
  std::normal_distribution<double> noise(0, 1e-3);
  std::vector<double> x(100003);
  for (double& v : x) v = 1e9 + noise(rng);
  RunningStats s(DType::Of<double>());
  // Fed in uneven pieces, as chunks are.
  for (size_t i = 0; i < x.size();) {
    const size_t n = std::min<size_t>(1 + rng() % 9000, x.size() - i);
    s.Add(reinterpret_cast<const std::byte*>(x.data() + i), static_cast<int64_t>(n));
    i += n;
  }
  long double mean = 0;
  for (double v : x) mean += v;
  mean /= x.size();
  long double m2 = 0;
  for (double v : x) m2 += (v - mean) * (v - mean);
  const double want_std = std::sqrt(static_cast<double>(m2 / x.size()));
  CHECK(s.count() == static_cast<int64_t>(x.size()));
  // Within two units in the last place of 1e9 (1.2e-16 relative each): the mean of the shifted
  // values kept it within one in 3,000 seeds; unshifted, a third of the seeds were off by more
  // (up to 10 units).
  CHECK(s.mean() == doctest::Approx(static_cast<double>(mean)).epsilon(2.5e-16));
  CHECK(s.std() == doctest::Approx(want_std).epsilon(1e-6));  // the naive formula gets this wrong

  const int64_t ints[3] = {INT64_MIN, 5, INT64_MAX};
  RunningStats si(DType::Of<int64_t>());
  si.Add(reinterpret_cast<const std::byte*>(ints), 3);
  CHECK(si.min() == "-9223372036854775808");
  CHECK(si.max() == "9223372036854775807");

  RunningStats empty(DType::Of<float>());
  CHECK_FALSE(empty.min().has_value());
  const float nan_and_inf[3] = {1.0f, NAN, -INFINITY};
  RunningStats sf(DType::Of<float>());
  sf.Add(reinterpret_cast<const std::byte*>(nan_and_inf), 3);
  CHECK(sf.min() == "NaN");
  CHECK(JsonNumber(-INFINITY) == "-Infinity");
  CHECK(JsonNumber(0.1) == "0.1");
  CHECK(JsonNumber(1e300) == "1e+300");
}

TEST_CASE("exit codes: 0 ok, 3 conflict, 1 anything else") {
  CHECK(ExitCodeFor(Status::Ok()) == 0);
  CHECK(ExitCodeFor(ConflictError("x")) == 3);
  for (Code c : {Code::kInvalidArgument, Code::kNotFound, Code::kAlreadyExists, Code::kCorruption, Code::kIOError,
                 Code::kNoSpace, Code::kUnsupported, Code::kFailedPrecondition, Code::kInternal}) {
    CHECK(ExitCodeFor(Status(c, "x")) == 1);
  }
}

TEST_CASE("transfers: regions of an in-memory database, in both orders") {
  Options o;
  o.cache_bytes = 1 << 20;
  auto db = Database::Open("memory:", o).value();
  for (Order order : {Order::kC, Order::kF}) {
    auto a = db.Create(order == Order::kC ? "c" : "f", {5, 3, 4}, "<i4", ArrayOptions{order, 4096}).value();
    // Fill rows 1:4 with 7, then read the whole array back in both orders, in tiny chunks.
    const int32_t seven = 7;
    TransferOptions t;
    t.chunk_bytes = 20;  // five elements
    Region rows{{3, 3, 4}, 0, 1};
    REQUIRE(FillRegion(a, rows, reinterpret_cast<const std::byte*>(&seven), t).ok());
    for (bool fortran : {false, true}) {
      std::vector<int32_t> got;
      REQUIRE(ReadRegion(a, Region::Whole(a), fortran, t, [&](std::span<const std::byte> d, int64_t n) {
                const auto* p = reinterpret_cast<const int32_t*>(d.data());
                got.insert(got.end(), p, p + n);
                return Status::Ok();
              }).ok());
      REQUIRE(got.size() == 60);
      for (int i = 0; i < 5; ++i) {
        for (int j = 0; j < 3; ++j) {
          for (int k = 0; k < 4; ++k) {
            const size_t flat = fortran ? static_cast<size_t>(i + 5 * j + 15 * k) : static_cast<size_t>(i * 12 + j * 4 + k);
            CHECK(got[flat] == ((i >= 1 && i < 4) ? 7 : 0));
          }
        }
      }
    }
  }
}

TEST_CASE("import in the other order: slabs and passes give every element its place") {
  // Files whose value at each element is its C-order flat index, written in C or F order, are
  // imported into arrays of the other order with tiny chunks and working sets (many passes),
  // whole or as the tail an append fills; reading back in C order must give 0, 1, 2, ...
  bigarray::testing::TempDir tmp;
  Options o;
  o.cache_bytes = 1 << 20;
  auto db = Database::Open("memory:", o).value();
  int k = 0;
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {7, 5}, {1, 6}, {6, 1}, {4, 3, 5}, {3, 2, 2, 3}, {2000, 3}, {3, 2000}}) {
    for (bool file_fortran : {false, true}) {
      for (int64_t offset : {0, 2}) {  // 2: appended behind two existing slabs
        for (uint64_t working_set : {1, 64, 1 << 20}) {
          CAPTURE(k);
          const int n = static_cast<int>(shape.size());
          int64_t size = 1;
          for (int64_t d : shape) size *= d;
          // The file: element (i...) holds its C-order index, stored in the file's order.
          std::vector<int32_t> values(static_cast<size_t>(size));
          const auto cs = ContiguousStrides(shape, 1, false), fs = ContiguousStrides(shape, 1, true);
          for (int64_t c = 0; c < size; ++c) {
            int64_t rem = c, f = 0;
            for (int d = 0; d < n; ++d) {
              f += (rem / cs[d]) * fs[d];
              rem %= cs[d];
            }
            values[static_cast<size_t>(file_fortran ? f : c)] = static_cast<int32_t>(c);
          }
          const std::string path = tmp / ("f" + std::to_string(k) + ".npy");
          auto w = npy::NpyWriter::Create(path, DType::Of<int32_t>(), file_fortran, shape);
          REQUIRE(w.ok());
          REQUIRE(w->Write(std::as_bytes(std::span(values))).ok());
          REQUIRE(w->Commit().ok());
          // The array: the other order; `offset` extra slabs before the region along its slowest axis.
          const Order order = file_fortran ? Order::kC : Order::kF;
          const int slow = order == Order::kF ? n - 1 : 0;
          std::vector<int64_t> array_shape = shape;
          array_shape[slow] += offset;
          auto a = db.Create("a" + std::to_string(k++), array_shape, "<i8", ArrayOptions{order, 4096}).value();
          auto in = npy::NpyReader::Open(path);
          REQUIRE(in.ok());
          TransferOptions t;
          t.chunk_bytes = 24;
          t.working_set_bytes = working_set;
          const Region region{shape, slow, offset};
          REQUIRE(WriteRegionFromNpy(*in, a, region, t).ok());
          std::vector<int64_t> got;
          REQUIRE(ReadRegion(a, region, false, t, [&](std::span<const std::byte> d, int64_t count) {
                    const auto* p = reinterpret_cast<const int64_t*>(d.data());
                    got.insert(got.end(), p, p + count);
                    return Status::Ok();
                  }).ok());
          REQUIRE(got.size() == values.size());
          for (int64_t c = 0; c < size; ++c) REQUIRE(got[static_cast<size_t>(c)] == c);
        }
      }
    }
  }
}

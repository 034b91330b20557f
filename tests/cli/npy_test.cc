// The .npy header parser and writer (tools/cli/npy.h), including hostile input.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "cli_test_util.h"
#include "npy.h"

using namespace bigarray;
using namespace bigarray::npy;
using bigarray::testing::Fixture;
using bigarray::testing::ReadFile;
using bigarray::testing::TempDir;

namespace {

std::span<const std::byte> Bytes(const std::string& s) { return std::as_bytes(std::span(s)); }

// A version 1.0 preamble around `dict` (no padding, no data).
std::string V1(const std::string& dict) {
  std::string s = "\x93NUMPY\x01";
  s += '\0';
  s += static_cast<char>(dict.size() & 0xff);
  s += static_cast<char>(dict.size() >> 8);
  return s + dict;
}

Result<NpyHeader> ParseDict(const std::string& dict) { return ParseNpyHeader(Bytes(V1(dict))); }

}  // namespace

TEST_CASE("ParseNpyHeader: what NumPy writes") {
  auto h = ParseNpyHeader(Bytes(ReadFile(Fixture("f8_c.npy"))));
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  CHECK(h->major_version == 1);
  CHECK(h->dtype.str() == "<f8");
  CHECK_FALSE(h->fortran_order);
  CHECK(h->shape == std::vector<int64_t>{3, 4});
  CHECK(h->data_offset == 128);
  CHECK(h->data_bytes == 96);

  h = ParseNpyHeader(Bytes(ReadFile(Fixture("f4_be_f.npy"))));
  REQUIRE(h.ok());
  CHECK(h->dtype.str() == ">f4");
  CHECK(h->fortran_order);
  h = ParseNpyHeader(Bytes(ReadFile(Fixture("v2.npy"))));
  REQUIRE(h.ok());
  CHECK(h->major_version == 2);
  CHECK(h->shape == std::vector<int64_t>{10});
  h = ParseNpyHeader(Bytes(ReadFile(Fixture("v3.npy"))));
  REQUIRE(h.ok());
  CHECK(h->major_version == 3);
  h = ParseNpyHeader(Bytes(ReadFile(Fixture("scalar.npy"))));
  REQUIRE(h.ok());
  CHECK(h->shape.empty());
  CHECK(h->data_bytes == 8);
  h = ParseNpyHeader(Bytes(ReadFile(Fixture("empty.npy"))));
  REQUIRE(h.ok());
  CHECK(h->data_bytes == 0);

  // Other spellings Python accepts: double quotes, keys in any order, no trailing comma, Python 2
  // longs, extra spaces.
  h = ParseDict("{\"shape\": (2L,3L), \"fortran_order\": True, \"descr\": \"|u1\"}\n");
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  CHECK(h->shape == std::vector<int64_t>{2, 3});
  CHECK(h->fortran_order);
  CHECK(h->dtype.str() == "|u1");
  h = ParseDict("  { 'descr' : '>c16' , 'fortran_order' : False , 'shape' : ( 5 , ) , }  \n");
  REQUIRE(h.ok());
  CHECK(h->shape == std::vector<int64_t>{5});
}

TEST_CASE("ParseNpyHeader: malformed headers are errors that say why") {
  struct Case {
    std::string dict, why;
  };
  const std::vector<Case> cases = {
      {"", "not a dictionary"},
      {"[1, 2]", "not a dictionary"},
      {"{'descr': '<f8', 'fortran_order': False}", "lacks one of"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'descr': '<f8'}", "duplicate key 'descr'"},
      {"{'descr': '<f8', 'fortran_order': 0, 'shape': (3,)}", "not True or False"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3)}", "not a tuple"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': [3]}", "not a tuple"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,,)}", "non-negative integers"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': ((3,),)}", "non-negative integers"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3.5,)}", "expected ',' or ')'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}", "exceeds 2^63"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 2)}", "larger than 2^63"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (" + std::string(66, '1') + ",)}", "exceeds 2^63"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,)} junk", "after the header"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,)", "expected ',' or '}'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), ", "expected a quoted key"},
      {"{'descr': '<f8' 'fortran_order': False, 'shape': (3,)}", "expected ',' or '}'"},
      {"{'descr: '<f8', 'fortran_order': False, 'shape': (3,)}", "expected ':'"},
      {"{'descr': '<f\\x38', 'fortran_order': False, 'shape': (3,)}", "not a string"},
      {"{'descr': 8, 'fortran_order': False, 'shape': (3,)}", "not a string"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}", "unexpected key 'x'"},
      {std::string("{'descr': '<f8',") + '\0' + " 'fortran_order': False, 'shape': (3,)}", "NUL byte"},
  };
  for (const Case& c : cases) {
    auto h = ParseDict(c.dict);
    CHECK_MESSAGE(h.status().code() == Code::kInvalidArgument, c.dict);
    CHECK_MESSAGE(h.status().message().find(c.why) != std::string::npos, c.dict << " -> " << h.status().message());
  }
  // 33 dimensions.
  std::string dims;
  for (int i = 0; i < 33; ++i) dims += "1, ";
  auto h = ParseDict("{'descr': '<f8', 'fortran_order': False, 'shape': (" + dims + ")}");
  CHECK(h.status().message().find("more than 32 dimensions") != std::string::npos);
  // Valid Python, but not storable: kUnsupported.
  for (const std::string descr : {"'<U5'", "'|O'", "'<M8[ns]'", "[('a', '<f8')]", "'<f16'", "'V8'"}) {
    h = ParseDict("{'descr': " + descr + ", 'fortran_order': False, 'shape': (3,)}");
    CHECK_MESSAGE(h.status().code() == Code::kUnsupported, descr << " -> " << h.status().ToString());
  }
}

TEST_CASE("ParseNpyHeader: preamble, versions and lengths") {
  const std::string good = ReadFile(Fixture("f8_c.npy"));
  CHECK(ParseNpyHeader({}).status().code() == Code::kInvalidArgument);
  CHECK(ParseNpyHeader(Bytes(good.substr(0, 5))).status().message().find("not a .npy file") != std::string::npos);
  CHECK(ParseNpyHeader(Bytes(good.substr(0, 9))).status().message().find("preamble") != std::string::npos);
  // Every truncation of the header is an error, never a read past the buffer.
  for (size_t n = 0; n < 128; ++n) CHECK_FALSE(ParseNpyHeader(Bytes(good.substr(0, n))).ok());
  CHECK(ParseNpyHeader(Bytes(good.substr(0, 128))).ok());
  std::string v = good;
  v[6] = 4;
  CHECK(ParseNpyHeader(Bytes(v)).status().code() == Code::kUnsupported);
  v[6] = 1;
  v[7] = 1;
  CHECK(ParseNpyHeader(Bytes(v)).status().code() == Code::kUnsupported);
  // A version 2.0 header claiming 4 GiB: refused from the preamble alone, before any allocation.
  std::string huge = "\x93NUMPY\x02";
  huge += std::string("\0\xff\xff\xff\xff", 5);
  auto offset = NpyDataOffset(Bytes(huge));
  CHECK(offset.status().code() == Code::kInvalidArgument);
  CHECK(offset.status().message().find("at most") != std::string::npos);
}

TEST_CASE("ParseNpyHeader survives random corruption of valid headers") {
  // A cheap stand-in for the fuzzer: mutate, truncate and extend real headers; every outcome must
  // be a value or an error (run under ASan/UBSan to catch out-of-bounds reads).
  std::vector<std::string> seeds;
  for (const char* f : {"f8_c.npy", "f4_be_f.npy", "v2.npy", "v3.npy", "scalar.npy", "all_c16.npy"}) {
    const std::string s = ReadFile(Fixture(f));
    seeds.push_back(s.substr(0, static_cast<size_t>(NpyDataOffset(Bytes(s)).value())));
  }
  std::mt19937_64 rng(bigarray::testing::TestSeed("npy mutation"));
  const std::string alphabet = "{}()[],:' \"0123456789LTrueFalsdcpfio<>|-\n\\";
  int ok = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % (s.size() + 1);
      switch (rng() % 5) {
        case 0: if (pos < s.size()) s[pos] = static_cast<char>(rng()); break;
        case 1: if (pos < s.size()) s[pos] = alphabet[rng() % alphabet.size()]; break;
        case 2: s.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
        case 3: if (pos < s.size()) s.erase(pos, 1 + rng() % 8); break;
        default: s.resize(pos); break;
      }
    }
    auto h = ParseNpyHeader(Bytes(s));
    if (h.ok()) {
      ++ok;
      CHECK(h->data_offset <= s.size());
      CHECK(h->data_bytes >= 0);
      CHECK(h->shape.size() <= 32);
    }
  }
  MESSAGE(ok << " of 20000 mutated headers parsed");
}

TEST_CASE("FormatNpyHeader: what NumPy writes, aligned to 64 bytes") {
  const std::string good = ReadFile(Fixture("f8_c.npy"));
  CHECK(FormatNpyHeader(DType::Of<double>(), false, {3, 4}) == good.substr(0, 128));
  const std::string fortran = ReadFile(Fixture("f4_be_f.npy"));
  CHECK(FormatNpyHeader(DType::Parse(">f4").value(), true, {3, 4}) == fortran.substr(0, 128));
  for (const auto& shape : std::vector<std::vector<int64_t>>{{}, {0}, {7}, {1, 2, 3, 4, 5, 6, 7, 8},
                                                              std::vector<int64_t>(32, 1ll << 1)}) {
    const std::string h = FormatNpyHeader(DType::Parse(">c8").value(), shape.size() % 2 == 1, shape);
    CHECK(h.size() % 64 == 0);
    CHECK(h.back() == '\n');
    auto parsed = ParseNpyHeader(Bytes(h));
    REQUIRE_MESSAGE(parsed.ok(), parsed.status().ToString());
    CHECK(parsed->shape == shape);
    CHECK(parsed->fortran_order == (shape.size() % 2 == 1));
    CHECK(parsed->dtype.str() == ">c8");
    CHECK(parsed->data_offset == h.size());
  }
}

TEST_CASE("NpyReader and NpyWriter: streaming, truncation, trailing bytes, no partial files") {
  TempDir tmp;
  {
    auto w = NpyWriter::Create(tmp / "a.npy", DType::Parse("<i2").value(), false, {2, 3});
    REQUIRE(w.ok());
    const int16_t v[6] = {1, 2, 3, 4, 5, 6};
    REQUIRE(w->Write(std::as_bytes(std::span(v).first(4))).ok());
    CHECK_FALSE(std::filesystem::exists(tmp / "a.npy"));  // written beside it until committed
    REQUIRE(w->Write(std::as_bytes(std::span(v).subspan(4))).ok());
    REQUIRE(w->Commit().ok());
  }
  CHECK(std::filesystem::directory_iterator(tmp.path())->path().filename() == "a.npy");
  {
    auto r = NpyReader::Open(tmp / "a.npy");
    REQUIRE(r.ok());
    CHECK(r->header().shape == std::vector<int64_t>{2, 3});
    int16_t v[6];
    REQUIRE(r->Read(std::as_writable_bytes(std::span(v).first(2))).ok());
    REQUIRE(r->Read(std::as_writable_bytes(std::span(v).subspan(2))).ok());
    CHECK(v[5] == 6);
    CHECK(r->Finish().ok());
  }
  {  // an abandoned writer leaves nothing
    auto w = NpyWriter::Create(tmp / "b.npy", DType::Of<double>(), false, {10});
    REQUIRE(w.ok());
    CHECK(w->Commit().code() == Code::kInternal);  // no data written
  }
  CHECK_FALSE(std::filesystem::exists(tmp / "b.npy"));
  CHECK(std::distance(std::filesystem::directory_iterator(tmp.path()), {}) == 1);

  CHECK(NpyReader::Open(tmp / "missing.npy").status().code() == Code::kNotFound);
  CHECK(NpyReader::Open(tmp.path()).status().message().find("directory") != std::string::npos);
  auto r = NpyReader::Open(Fixture("bad_truncated.npy"));
  CHECK(r.status().message().find("needs 96 data bytes, the file has 86") != std::string::npos);
  r = NpyReader::Open(Fixture("bad_trailing.npy"));
  CHECK(r.status().message().find("3 unexpected bytes") != std::string::npos);
}

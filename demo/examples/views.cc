// Views: NumPy basic indexing, broadcasting assignment, spans, and errors as values.
#include <cstdio>

#include "bigarray/database.h"

using namespace bigarray;

int main() {
  auto db = Database::Open("memory:").value();
  auto img = db.Create("image", {480, 640, 3}, "u1").value();
  auto v = img.view().value();

  // img[100:200, ::2, 0] = 255   (a strided view, assigned by broadcasting a scalar)
  auto red = v.Index({Slice{100, 200, 1}, Slice{std::nullopt, std::nullopt, 2}, int64_t{0}}).value();
  red.Fill(255).ThrowIfError();

  // img[-1] = [1, 2, 3]          (a row broadcast along the last row's 640 pixels)
  uint8_t rgb[3] = {1, 2, 3};
  v.Index({int64_t{-1}}).value().Assign(View::Wrap(rgb, DType::Of<uint8_t>(), {3}).value()).ThrowIfError();

  // Contiguous views give spans; a reversed view does not.
  auto row = v.Index({int64_t{0}}).value();
  std::printf("row 0: %zu bytes as a span\n", row.Span<uint8_t>().value().size());
  auto flipped = v.Index({Slice{std::nullopt, std::nullopt, -1}}).value();
  std::printf("reversed view as a span: %s\n", flipped.Span<uint8_t>().status().ToString().c_str());
  std::printf("out of range: %s\n", v.Index({int64_t{480}}).status().ToString().c_str());
  return v.at<uint8_t>(150, 10, 0) == 255 && v.at<uint8_t>(150, 11, 0) == 0 && v.at<uint8_t>(479, 7, 2) == 3 ? 0 : 1;
}

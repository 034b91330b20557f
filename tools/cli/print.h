// print.h: the values of an array, or of rows of it, as text for the cat, head and tail
// commands: in NumPy's print() layout, as CSV or as JSON.
//
// kText follows numpy.array2string with NumPy's default print options (line width 75,
// threshold 1000 elements, 3 edge items, precision 8, 'maxprec' float mode): the same brackets,
// alignment, line wrapping and `...` summarization, and for floats the same choice between
// positional and scientific notation and the same digits (the shortest that read back as the
// element, at most 8 after the point). A summarized array reads only the elements it shows.
// kCsv and kJson print every selected element, streaming, in the shortest form that reads
// back exactly.
#pragma once

#include <cstdio>
#include <string>

#include "args.h"
#include "bigarray/database.h"
#include "transfer.h"

namespace bigarray::cli {

// Writes the region's elements to `out`, followed by a newline. kCsv: one line per element
// (0-d and 1-d) or per row (2-d); kUnsupported for more dimensions. kJson: nested lists as
// json.dumps(a.tolist()) writes them, NaN and infinities as NaN, Infinity, -Infinity, complex
// elements as [real, imag].
Status PrintRegion(const Array& a, const Region& region, PrintFormat format,
                   const TransferOptions& options, std::FILE* out);

// One element as Python's repr() writes the NumPy scalar's value: "3", "True", "0.1", "1e-05",
// "nan", "(1+2j)" (complex without the parentheses). For CSV and tests.
std::string ElementRepr(const DType& dtype, const std::byte* element);

}  // namespace bigarray::cli

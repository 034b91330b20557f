// The bigarray command-line tool (docs/cli.md).
#include "cli.h"

int main(int argc, char** argv) { return bigarray::cli::Run(argc, argv); }

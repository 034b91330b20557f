// The tests' main. doctest's own SIGSEGV handler is disabled (DOCTEST_CONFIG_NO_POSIX_SIGNALS, set in CMake): the pager handles SIGSEGV.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

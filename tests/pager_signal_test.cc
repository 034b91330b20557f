// P7: faults outside the pager's regions are never swallowed. This test has its own main, so
// that the handler installed before the pager's is under its control.
#define DOCTEST_CONFIG_NO_POSIX_SIGNALS
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "pager/pager.h"

using namespace bigarray;
using namespace bigarray::pager;

namespace {

class ZeroSource : public BlockSource {
 public:
  Status LoadBlock(uint64_t, std::span<std::byte> out) override {
    std::memset(out.data(), 0x5A, out.size());
    return Status::Ok();
  }
};

sigjmp_buf g_jump;
void* volatile g_fault_addr = nullptr;
volatile sig_atomic_t g_calls = 0;

void PreviousHandler(int, siginfo_t* info, void*) {
  g_fault_addr = info->si_addr;
  g_calls = g_calls + 1;
  siglongjmp(g_jump, 1);
}

std::byte* ForeignPage() {
  void* p = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return static_cast<std::byte*>(p);
}

// Child mode: no handler before ours; a foreign fault must kill the process with SIGSEGV.
int ChildDefault() {
  auto pager = Pager::Create(PagerOptions{}).value();
  auto file = pager->OpenFile(std::make_shared<ZeroSource>(), 65536, "a").value();
  auto m = file->Map(0, 1).value();
  if (*static_cast<volatile std::byte*>(m->data()) != std::byte{0x5A}) return 3;
  (void)*static_cast<volatile std::byte*>(ForeignPage());
  return 4;  // not reached
}

}  // namespace

TEST_CASE("P7: with no handler before ours, a foreign fault is a plain segfault") {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/proc/self/exe", "pager_signal_test", "--child-default-segv", nullptr);
    _exit(5);
  }
  int status;
  waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGSEGV);
}

TEST_CASE("P7: a foreign fault goes to the handler installed before the pager's") {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = PreviousHandler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGSEGV, &sa, nullptr) == 0);

  auto pager = Pager::Create(PagerOptions{}).value();  // installs ours, remembering the above
  auto file = pager->OpenFile(std::make_shared<ZeroSource>(), 65536, "a").value();
  auto m = file->Map(0, 2).value();
  CHECK(*static_cast<volatile std::byte*>(m->data() + 65536) == std::byte{0x5A});
  CHECK(g_calls == 0);  // our own faults never reach it

  std::byte* foreign = ForeignPage();
  if (sigsetjmp(g_jump, 1) == 0) {
    (void)*static_cast<volatile std::byte*>(foreign + 8);
    FAIL("the foreign access did not fault");
  }
  CHECK(g_calls == 1);
  CHECK(static_cast<void*>(g_fault_addr) == static_cast<void*>(foreign + 8));
  // The pager still works after that.
  CHECK(*static_cast<volatile std::byte*>(m->data()) == std::byte{0x5A});
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--child-default-segv") == 0) return ChildDefault();
  doctest::Context context(argc, argv);
  return context.run();
}

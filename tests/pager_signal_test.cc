// P7: faults outside the pager's regions are never swallowed, SIGSEGV or SIGBUS (the loaders'
// guard of their checks through mappings, bus_guard.h). This test has its own main, so that the
// handlers installed before the pager's are under its control.
#define DOCTEST_CONFIG_NO_POSIX_SIGNALS
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "pager/bus_guard.h"
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

// A page of a file mapped past the file's end: reading it raises SIGBUS (BUS_ADRERR).
std::byte* PastEndPage() {
  char path[] = "/tmp/pager_signal_test.XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return nullptr;
  unlink(path);
  void* p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);  // the file is empty
  close(fd);
  return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
}

// Child mode: no SIGBUS handler before ours; a SIGBUS outside a guarded read must kill the
// process with SIGBUS, as must one sent with raise().
int ChildDefaultBus(bool sent) {
  auto pager = Pager::Create(PagerOptions{}).value();  // installs the SIGBUS guard
  struct sigaction current;
  sigaction(SIGBUS, nullptr, &current);
  if (!(current.sa_flags & SA_SIGINFO)) return 3;  // not installed: the test would prove nothing
  if (sent) {
    raise(SIGBUS);
    return 4;  // not reached
  }
  std::byte* page = PastEndPage();
  if (!page) return 5;
  (void)*static_cast<volatile std::byte*>(page);
  return 4;  // not reached
}

class FailingSource : public BlockSource {
 public:
  Status LoadBlock(uint64_t, std::span<std::byte>) override { return IOError("injected read error"); }
};

// Child mode: SIGBUS set to `ignore` (SIG_IGN, or SA_SIGINFO with a null handler, i.e. SIG_DFL)
// before the pager starts; then a fatal page fault (`fatal`) or a foreign SIGBUS. Either must end
// the process with SIGBUS, not retry forever (SIGALRM after 20 s says it hung).
int ChildBusBeforeUs(bool ignore, bool fatal) {
  alarm(20);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  if (ignore) {
    sa.sa_handler = SIG_IGN;
  } else {
    sa.sa_flags = SA_SIGINFO;
    sa.sa_sigaction = nullptr;
  }
  if (sigaction(SIGBUS, &sa, nullptr) != 0) return 6;
  auto pager = Pager::Create(PagerOptions{}).value();
  auto file = pager->OpenFile(fatal ? std::shared_ptr<BlockSource>(std::make_shared<FailingSource>())
                                    : std::make_shared<ZeroSource>(),
                              65536, "a")
                  .value();
  auto m = file->Map(0, 1).value();
  if (fatal) {
    (void)*static_cast<volatile std::byte*>(m->data());
    return 4;  // not reached
  }
  std::byte* page = PastEndPage();
  if (!page) return 5;
  (void)*static_cast<volatile std::byte*>(page);
  return 4;  // not reached
}

int RunChild(const char* mode) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/proc/self/exe", "pager_signal_test", mode, nullptr);
    _exit(5);
  }
  int status;
  waitpid(pid, &status, 0);
  return status;
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

TEST_CASE("P7: with no SIGBUS handler before ours, a SIGBUS outside a guarded read is a plain bus error") {
  for (const char* mode : {"--child-default-bus", "--child-raise-bus"}) {
    CAPTURE(mode);
    const int status = RunChild(mode);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGBUS);
  }
}

TEST_CASE("P7: a foreign fault goes to the handler installed before the pager's") {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = PreviousHandler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGSEGV, &sa, nullptr) == 0);
  REQUIRE(sigaction(SIGBUS, &sa, nullptr) == 0);

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
  // A SIGBUS outside a guarded read reaches it too.
  std::byte* past_end = PastEndPage();
  REQUIRE(past_end);
  if (sigsetjmp(g_jump, 1) == 0) {
    (void)*static_cast<volatile std::byte*>(past_end + 8);
    FAIL("the read past the end did not fault");
  }
  CHECK(g_calls == 2);
  CHECK(static_cast<void*>(g_fault_addr) == static_cast<void*>(past_end + 8));
  munmap(past_end, 4096);
  // The pager still works after that.
  CHECK(*static_cast<volatile std::byte*>(m->data()) == std::byte{0x5A});
}

TEST_CASE("P10: with SIGBUS ignored, or SA_SIGINFO with no handler, before ours, a bus error still ends the process") {
  for (const char* mode : {"--child-ignored-bus-fatal", "--child-ignored-bus-foreign", "--child-siginfo-dfl-bus-fatal",
                           "--child-siginfo-dfl-bus-foreign"}) {
    CAPTURE(mode);
    const int status = RunChild(mode);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGBUS);
  }
}

TEST_CASE("the SIGBUS guard: a read past a file's end is reported, the thread goes on") {
  auto pager = Pager::Create(PagerOptions{}).value();  // installs the guard
  std::byte* page = PastEndPage();
  REQUIRE(page);
  struct Arg {
    std::byte* page;
    int reached = 0;
  } arg{page};
  auto touch = [](void* a) noexcept {
    auto* x = static_cast<Arg*>(a);
    (void)*static_cast<volatile std::byte*>(x->page + 100);
    x->reached = 1;
  };
  CHECK(ReadGuarded(page, 4096, touch, &arg) == GuardedRead::kBus);
  CHECK(arg.reached == 0);
  // Again (the signal mask was restored: SIGBUS is not left blocked), and a read that works.
  CHECK(ReadGuarded(page, 4096, touch, &arg) == GuardedRead::kBus);
  std::byte fine[16] = {};
  Arg ok{fine};
  CHECK(ReadGuarded(fine, sizeof fine, [](void* a) noexcept { static_cast<Arg*>(a)->reached = 1; }, &ok) ==
        GuardedRead::kDone);
  CHECK(ok.reached == 1);
  munmap(page, 4096);
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--child-default-segv") == 0) return ChildDefault();
  if (argc > 1 && std::strcmp(argv[1], "--child-default-bus") == 0) return ChildDefaultBus(false);
  if (argc > 1 && std::strcmp(argv[1], "--child-raise-bus") == 0) return ChildDefaultBus(true);
  if (argc > 1 && std::strcmp(argv[1], "--child-ignored-bus-fatal") == 0) return ChildBusBeforeUs(true, true);
  if (argc > 1 && std::strcmp(argv[1], "--child-ignored-bus-foreign") == 0) return ChildBusBeforeUs(true, false);
  if (argc > 1 && std::strcmp(argv[1], "--child-siginfo-dfl-bus-fatal") == 0) return ChildBusBeforeUs(false, true);
  if (argc > 1 && std::strcmp(argv[1], "--child-siginfo-dfl-bus-foreign") == 0) return ChildBusBeforeUs(false, false);
  doctest::Context context(argc, argv);
  return context.run();
}

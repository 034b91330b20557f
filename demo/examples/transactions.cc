// Transactions: isolation between handles, and a conflict handled by abort and retry.
#include <cstdio>
#include <filesystem>

#include "bigarray/database.h"

using bigarray::Code;
using bigarray::Database;

// Adds `amount` to counter[0], retrying when another transaction committed first.
bigarray::Status AddToCounter(Database& db, double amount) {
  for (;;) {
    auto counter = db.Get("counter").value().view().value();
    counter.at<double>(0) += amount;
    bigarray::Status st = db.Commit();
    if (st.code() != Code::kConflict) return st;
    db.Abort();  // see the winner's value, then redo the work
  }
}

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "transactions.db";
  auto alice = Database::Open(path).value();
  alice.Create("counter", {1}, "f8").value();
  alice.Commit().ThrowIfError();

  auto bob = Database::Open(path).value();  // a second handle, e.g. another thread or process
  auto a = alice.Get("counter").value().view().value();
  auto b = bob.Get("counter").value().view().value();
  a.at<double>(0) += 1;  // both change the same block
  b.at<double>(0) += 10;
  alice.Commit().ThrowIfError();                      // first commit wins
  std::printf("bob reads %.0f (his snapshot)\n", b.at<double>(0));
  bigarray::Status st = bob.Commit();                 // Conflict: nothing written
  std::printf("bob's commit: %s\n", st.ToString().c_str());
  bob.Abort();                                        // now bob sees alice's commit
  AddToCounter(bob, 10).ThrowIfError();
  alice.Abort();                                      // a boundary: alice sees bob's commit
  std::printf("counter = %.0f\n", a.at<double>(0));
  const bool ok = st.code() == Code::kConflict && a.at<double>(0) == 11;
  std::filesystem::remove_all(path);
  return ok ? 0 : 1;
}

// args.hpp — the command-line reader of the commands that take a few options of their
// own (derive, export, inspect, pack), so that they read options, check values and word
// their errors alike.  The training commands read theirs with Boost.Program_options from
// the configuration registry (run/config.hpp), which also reads configuration files.
//
// An option's value follows it ("--opt v") or is joined to it ("--opt=v"); a flag takes
// none.  Every error is a usage error (exit 2) of one line, "CMD: …", ending in the hint
// (e.g. "(dsonas derive --help)"):
//   CMD: --opt needs a value (HINT)
//   CMD: --flag takes no value (HINT)
//   CMD: --opt: expected a positive integer (got 'v')           integer(), lo = 1, hi ≥ 10⁶
//   CMD: --opt: expected an integer in [lo, hi] (got 'v')       integer(), else
//   CMD: --opt: expected a number in [lo, hi] (got 'v')         number()
//   CMD: unexpected argument 'a' (HINT)
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dsonas {

class CommandArgs {
 public:
  /// command: "derive"; usage: printed for --help / -h; hint: what errors end with.
  CommandArgs(std::string command, std::string usage, std::string hint);
  CommandArgs& text(const std::string& opt, std::string* v);
  CommandArgs& integer(const std::string& opt, int* v, long lo, long hi);
  CommandArgs& number(const std::string& opt, double* v, double lo, double hi);
  /// A switch: present → true.
  CommandArgs& flag(const std::string& opt, bool* v);
  /// One bare argument (not starting with '-'), e.g. inspect's FILE.
  CommandArgs& positional(std::string* v);
  /// Reads argv[1..argc); false when --help was asked for (the usage is printed: exit 0).
  bool parse(int argc, char** argv);
  /// Whether parse() met `opt` (e.g. to tell an empty value from an absent option).
  bool given(const std::string& opt) const;

 private:
  struct Opt {
    std::string name;
    std::function<void(const std::string&)> set;
    bool takes_value = true;
  };
  std::string command_, usage_, hint_;
  std::vector<Opt> opts_;
  std::vector<std::string> given_;
  std::string* positional_ = nullptr;
};

/// argv-style pointers to the strings of `args` (which must outlive them and not
/// change size); null_terminated adds the nullptr an exec-style call needs (not
/// counted: argc = size() − 1 then).
std::vector<char*> argv_of(std::vector<std::string>& args, bool null_terminated = false);

}  // namespace dsonas

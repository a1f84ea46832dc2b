// args.cpp — see args.hpp.
#include "dsonas/run/args.hpp"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <utility>

#include "dsonas/core/error.hpp"

namespace dsonas {

CommandArgs::CommandArgs(std::string command, std::string usage, std::string hint)
    : command_(std::move(command)), usage_(std::move(usage)), hint_(std::move(hint)) {}

CommandArgs& CommandArgs::text(const std::string& opt, std::string* v) {
  opts_.push_back({opt, [v](const std::string& s) { *v = s; }});
  return *this;
}

CommandArgs& CommandArgs::integer(const std::string& opt, int* v, long lo, long hi) {
  const std::string c = command_;
  opts_.push_back({opt, [=](const std::string& s) {
                     char* end = nullptr;
                     const long x = std::strtol(s.c_str(), &end, 10);
                     if (s.empty() || *end != '\0' || x < lo || x > hi)
                       fail_usage(
                           lo == 1 && hi >= 1000000
                               ? str(c, ": ", opt, ": expected a positive integer (got '", s, "')")
                               : str(c, ": ", opt, ": expected an integer in [", lo, ", ", hi, "] (got '", s, "')"));
                     *v = static_cast<int>(x);
                   }});
  return *this;
}

CommandArgs& CommandArgs::number(const std::string& opt, double* v, double lo, double hi) {
  const std::string c = command_;
  opts_.push_back({opt, [=](const std::string& s) {
                     char* end = nullptr;
                     const double x = std::strtod(s.c_str(), &end);
                     if (s.empty() || *end != '\0' || !(x >= lo && x <= hi))
                       fail_usage(str(c, ": ", opt, ": expected a number in [", lo, ", ", hi, "] (got '", s, "')"));
                     *v = x;
                   }});
  return *this;
}

CommandArgs& CommandArgs::flag(const std::string& opt, bool* v) {
  opts_.push_back({opt, [v](const std::string&) { *v = true; }, false});
  return *this;
}

CommandArgs& CommandArgs::positional(std::string* v) {
  positional_ = v;
  return *this;
}

bool CommandArgs::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage_;
      return false;
    }
    const size_t eq = a.rfind("--", 0) == 0 ? a.find('=') : std::string::npos;
    const std::string name = a.substr(0, eq);
    bool known = false;
    for (const Opt& o : opts_) {
      if (name != o.name) continue;
      if (!o.takes_value) {
        if (eq != std::string::npos) fail_usage(str(command_, ": ", o.name, " takes no value (", hint_, ")"));
        o.set("");
      } else if (eq != std::string::npos) {
        o.set(a.substr(eq + 1));
      } else {
        if (i + 1 >= argc) fail_usage(str(command_, ": ", o.name, " needs a value (", hint_, ")"));
        o.set(argv[++i]);
      }
      given_.push_back(o.name);
      known = true;
      break;
    }
    if (known) continue;
    if (positional_ && positional_->empty() && !a.empty() && a[0] != '-') {
      *positional_ = a;
      continue;
    }
    fail_usage(str(command_, ": unexpected argument '", a, "' (", hint_, ")"));
  }
  return true;
}

bool CommandArgs::given(const std::string& opt) const {
  return std::find(given_.begin(), given_.end(), opt) != given_.end();
}

std::vector<char*> argv_of(std::vector<std::string>& args, bool null_terminated) {
  std::vector<char*> v;
  v.reserve(args.size() + 1);
  for (std::string& a : args) v.push_back(&a[0]);
  if (null_terminated) v.push_back(nullptr);
  return v;
}

}  // namespace dsonas

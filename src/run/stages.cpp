// stages.cpp — see stages.hpp.
#include "stages.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "dsonas/core/error.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/derive.hpp"
#include "dsonas/run/run_common.hpp"

namespace dsonas {
namespace stages {

namespace {
// `args` without every occurrence of the named options ("--name value" and
// "--name=value" for those that take a value, "--name" for the switches).
std::vector<std::string> without(const std::vector<std::string>& args, const std::vector<std::string>& valued,
                                 const std::vector<std::string>& switches) {
  auto named = [](const std::vector<std::string>& names, const std::string& a) {
    for (const std::string& n : names)
      if (a == n || a.rfind(n + "=", 0) == 0) return true;
    return false;
  };
  std::vector<std::string> r;
  for (size_t i = 0; i < args.size(); ++i) {
    if (named(valued, args[i])) {
      if (args[i].find('=') == std::string::npos) ++i;  // its value is the next argument
      continue;
    }
    if (named(switches, args[i])) continue;
    r.push_back(args[i]);
  }
  return r;
}
std::vector<std::string> without_out(const std::vector<std::string>& args) { return without(args, {"--out"}, {}); }
}  // namespace

std::vector<std::string> stage_args(const std::vector<std::string>& args, const std::string& out,
                                    const std::vector<std::string>& extra) {
  DSO_CHECK(extra.size() % 2 == 0, "stage_args: `extra` holds option/value pairs");
  std::vector<std::string> names{"--out"};
  for (size_t i = 0; i < extra.size(); i += 2) names.push_back(extra[i]);
  // the parent's own --resume, --out and every option `extra` sets are left out: a
  // stage's folder decides --resume, and Boost refuses an option given twice
  std::vector<std::string> r = without(args, names, {"--resume"});
  r.push_back("--out");
  r.push_back(out);
  if (path_exists(out + "/metrics.jsonl")) r.push_back("--resume");
  for (const std::string& e : extra) r.push_back(e);
  return r;
}

RunConfig stage_config(const std::string& command, const std::vector<std::string>& args) {
  std::vector<std::string> a{command};
  a.insert(a.end(), args.begin(), args.end());
  std::vector<char*> argv = argv_of(a);
  return parse_config(command, static_cast<int>(argv.size()), argv.data());
}

std::vector<std::string> eval_args(const std::vector<std::string>& args, const std::string& run) {
  std::vector<std::string> a = without_out(args);
  a.push_back("--run");
  a.push_back(run);
  return a;
}

std::string read_text(const std::string& p) {
  std::ifstream f(p);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string final_metrics(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(f, line))
    if (line.find("\"event\":\"final\"") != std::string::npos) last = line;
  return last;
}

double json_number(const std::string& line, const std::string& key) {
  const size_t k = line.find("\"" + key + "\":");
  if (k == std::string::npos) return 0;
  return std::atof(line.c_str() + k + key.size() + 3);
}

int derive_on_root(const std::string& run, const std::string& out, const std::string& png) {
  Communicator& comm = Communicator::world();
  int rc = 0;
  if (comm.root()) {
    std::vector<std::string> a{"derive", "--run", run, "--out", out};
    if (!png.empty()) a.insert(a.end(), {"--png", png});
    std::vector<char*> av = argv_of(a);
    rc = run_derive(static_cast<int>(av.size()), av.data());
  }
  double r = rc;
  comm.sum(&r, 1);
  return r != 0 ? (rc ? rc : kExitInternal) : kExitOk;
}

}  // namespace stages
}  // namespace dsonas

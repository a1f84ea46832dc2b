// version.cpp — see version.hpp.  DSONAS_VERSION, DSONAS_COMMIT and DSONAS_BUILD come
// from BUILD/version.inc, which the Makefile rewrites only when they change (so a
// commit rebuilds this file and relinks, nothing else).
#include "dsonas/core/version.hpp"

#include <mutex>

#include "dsonas/core/error.hpp"
#include "version.inc"

namespace dsonas {
namespace {
std::mutex g_mu;
std::string (*g_report)() = nullptr;
std::string g_text;  // version_text() once a report is registered and computed
}  // namespace

std::string version_line() { return str("dsonas ", DSONAS_VERSION, " (commit ", DSONAS_COMMIT, ")"); }

std::string build_line() { return str("build: ", DSONAS_BUILD, "; compiler ", __VERSION__); }

void set_library_report(std::string (*report)()) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_report = report;
  g_text.clear();
}

std::string version_text() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_report) return version_line() + "\n" + build_line() + "\nlibraries: not reported by this program\n";
  if (g_text.empty()) g_text = version_line() + "\n" + build_line() + "\n" + g_report();
  return g_text;
}

}  // namespace dsonas

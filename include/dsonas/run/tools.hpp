// tools.hpp — finding and running dsonas's Python tools (utils/*.py) from the binary.
//
// The tools live in <home>/utils, where <home> is, in this order: $DSONAS_HOME (the
// modulefile of an installed tree sets it), the folder above the binary's folder
// (<tree>/build/dsonas → <tree>, a checkout), and PREFIX/share/dsonas for a binary in
// PREFIX/bin (an installed tree without the modulefile).  They run under
// $DSONAS_PYTHON, else Debian's /usr/bin/python3 (which has the packages `make deps`
// installs).
#pragma once
#include <string>
#include <vector>

namespace dsonas {

/// The homes searched, in order (see above).
std::vector<std::string> tool_homes();

/// Full path of <home>/utils/<name> for the first home that has it, or "".
std::string find_tool(const std::string& name);

/// $DSONAS_PYTHON when set and non-empty, else /usr/bin/python3.
std::string python_interpreter();

/// Result of run_tool.
struct ToolRun {
  bool started = false;  // false: the interpreter could not be started (why in `error`)
  int status = -1;       // exit status, or 128 + signal number
  std::string error;     // why it did not start
  std::string stderr_text;
};

/// Runs `python_interpreter() tool args...`, its stdout going to ours, its stderr
/// captured (also echoed to ours when echo_stderr).
ToolRun run_tool(const std::string& tool, const std::vector<std::string>& args, bool echo_stderr = false);

}  // namespace dsonas

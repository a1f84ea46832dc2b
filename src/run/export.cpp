// export.cpp — see export.hpp.
#include "dsonas/run/export.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/network_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/network.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/config.hpp"
#include "dsonas/run/run_common.hpp"
#include "dsonas/run/tools.hpp"

namespace dsonas {
namespace {

const char* kExportUsage =
    "usage: dsonas export --run DIR|FILE.h5 --format onnx|pytorch --out FILE [--batch N]\n"
    "  --run     a retrain run folder (its network.h5) or a network file\n"
    "  --format  onnx: an ONNX model (opset 17, BN folded into the convolutions it follows);\n"
    "            pytorch: a TorchScript module (torch.jit.load, no dsonas code needed)\n"
    "  --out     the file to write (replaced only if an earlier dsonas export wrote it)\n"
    "  --batch   onnx: a fixed batch size N (default: a dynamic batch axis)\n"
    "The exported network takes float32 NCHW images with pixel values / 255 in [0, 1] and\n"
    "normalises them itself with the mean and std of the dataset it was trained on (those of\n"
    "dsonas eval); it returns the logits of the main head.  Left out: the auxiliary head,\n"
    "dropout and drop-path (training only).  Runs utils/export_net.py (PyTorch, h5py, onnx:\n"
    "make deps installs them) under $DSONAS_PYTHON or /usr/bin/python3.\n"
    "exit codes: 0 done, 2 bad usage (nothing written), 3 network file unusable,\n"
    "            1 the conversion tool failed (its message on one line)\n";

/// Bytes [from, from + n) of a file (fewer at its end).
std::string read_part(const std::string& p, std::streamoff from, size_t n) {
  std::ifstream f(p, std::ios::binary);
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (from < 0) from = std::max<std::streamoff>(0, size + from);
  f.seekg(from);
  std::string s(n, '\0');
  f.read(&s[0], static_cast<std::streamsize>(n));
  s.resize(static_cast<size_t>(f.gcount()));
  return s;
}

/// True if p is a file an earlier export wrote: an ONNX model whose doc_string (it
/// precedes the graph) starts "dsonas export", or a TorchScript archive (a zip whose
/// central directory, at its end, lists extra/dsonas.json).
bool written_by_export(const std::string& p) {
  if (read_part(p, 0, 4096).find("dsonas export of ") != std::string::npos) return true;
  const std::string tail = read_part(p, -65536, 65536);
  return tail.find("extra/dsonas.json") != std::string::npos;
}

/// Refuses (exit 2) an output path in a missing folder, naming a folder, or naming a
/// file that export did not write.
void check_output(const std::string& p) {
  bool dir = false;
  if (path_exists(p, &dir)) {
    if (dir) fail_usage(str("export: --out ", p, " is a folder"));
    if (!written_by_export(p))
      fail_usage(str("export: --out ", p, " exists and was not written by dsonas export; refusing to overwrite it"));
    return;
  }
  const size_t slash = p.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  if (!path_exists(parent, &dir) || !dir) fail_usage(str("export: --out ", p, ": folder ", parent, " does not exist"));
}

std::string join_floats(const std::vector<float>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    char b[32];
    std::snprintf(b, sizeof b, "%.9g", static_cast<double>(v[i]));
    s += (i ? "," : "") + std::string(b);
  }
  return s;
}

/// The last non-empty line of a text.
std::string last_line(const std::string& text) {
  size_t end = text.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return "";
  const size_t begin = text.find_last_of('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1,
                     end - (begin == std::string::npos ? 0 : begin + 1) + 1);
}

}  // namespace

int run_export(int argc, char** argv) {
  std::string run, format, out;
  int batch = 0;
  CommandArgs cli("export", kExportUsage, "dsonas export --help");
  cli.text("--run", &run).text("--format", &format).text("--out", &out).integer("--batch", &batch, 1, 1000000);
  if (!cli.parse(argc, argv)) return kExitOk;
  if (run.empty()) fail_usage("export: --run is required (a retrain run folder or a network file)");
  if (format.empty()) fail_usage("export: --format is required (onnx or pytorch)");
  if (format != "onnx" && format != "pytorch")
    fail_usage(str("export: --format: '", format, "' (expected onnx or pytorch)"));
  if (out.empty()) fail_usage("export: --out is required (the file to write)");
  if (batch > 0 && format != "onnx") fail_usage("export: --batch applies to --format onnx only");

  // the network file, then the output path, before anything is loaded or written
  bool is_dir = false;
  if (!path_exists(run, &is_dir)) fail_usage(str("export: --run ", run, ": no such file or folder"));
  const std::string file = is_dir ? (run.back() == '/' ? run : run + "/") + "network.h5" : run;
  if (is_dir && !path_exists(file))
    throw Error(kExitCheckpoint, str("export: --run ", run, " holds no network.h5 (did its retrain finish?)"));
  check_output(out);

  // load it as eval does: every dataset's presence, shape and checksum is verified
  const std::string fmt = read_root_attr(file, "format");
  if (fmt != "dsonas-network" && fmt != "dsonas-network-checkpoint")
    throw Error(kExitCheckpoint, str("export: ", file, ": not a dsonas network file (format attribute '", fmt,
                                     "'; dsonas retrain writes network.h5)"));
  const Architecture arch = read_network_arch(file);
  const NetworkOptions opt = NetworkOptions::from_string(read_root_attr(file, "options"), file);
  {
    auto be = make_backend(Device::CPU, 1);
    Network net(arch, *be, 0, opt);
    load_network_file(file, net);
  }
  // the dataset it was trained on decides the input normalisation (as for eval)
  RunConfig cfg;
  {
    auto m = ini_map(read_root_attr(file, "config"));
    if (m.count("data.dataset")) cfg.dataset = m["data.dataset"];
  }
  const InputNormalisation norm = input_normalisation(cfg, arch.space().in_channels);

  const std::string tool = find_tool("export_net.py");
  if (tool.empty()) {
    std::string where;
    for (const std::string& h : tool_homes()) where += (where.empty() ? "" : ", ") + h + "/utils";
    throw Error(kExitInternal, str("export: utils/export_net.py not found (looked in ", where, "; set DSONAS_HOME)"));
  }
  const std::string tmp = str(out, ".tmp", ::getpid());
  std::vector<std::string> args = {"--net",      file,
                                   "--format",   format,
                                   "--out",      tmp,
                                   "--dataset",  cfg.dataset,
                                   "--mean",     join_floats(norm.mean),
                                   "--std",      join_floats(norm.std),
                                   "--exporter", str("dsonas export (", version_line(), ")"),
                                   "--name",     out};
  if (batch > 0) {
    args.push_back("--batch");
    args.push_back(std::to_string(batch));
  }
  const ToolRun r = run_tool(tool, args);
  if (!r.started) {
    std::remove(tmp.c_str());
    throw Error(kExitInternal, str("export: ", r.error));
  }
  if (r.status != 0) {
    std::remove(tmp.c_str());
    std::string why = last_line(r.stderr_text);
    if (why.rfind("export_net.py: ", 0) == 0) why = why.substr(15);
    if (why.empty()) why = "no message";
    const int code = r.status == kExitUsage || r.status == kExitCheckpoint ? r.status : kExitInternal;
    throw Error(code, str("export: utils/export_net.py failed (exit ", r.status, "): ", why));
  }
  if (!path_exists(tmp)) throw Error(kExitInternal, str("export: ", tool, " reported success but wrote no ", tmp));
  if (std::rename(tmp.c_str(), out.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(kExitInternal, str("export: write ", out, ": ", std::strerror(e)));
  }
  return kExitOk;
}

}  // namespace dsonas

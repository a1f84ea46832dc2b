// derive.cpp — see derive.hpp.
//
// Design note.  The command only does I/O around model/architecture.hpp: resolve
// --run (a run folder → DIR/model.h5, or a model/checkpoint file), load λ and the
// live mask the way `inspect` does (SearchSpace from the file, a CPU Supergraph,
// load_model_file), build Architecture::from_lambda on the space at the chosen
// width, and write JSON + DOT (+ PNG through Graphviz when it is installed).
// Every output path is checked before anything is loaded or written: an existing
// file is replaced only if derive wrote it (JSON with format "dsonas-architecture",
// DOT with derive's header line, a PNG file), and each file is written to a
// temporary name and renamed, so a failure never leaves a half-written output.
#include "dsonas/run/derive.hpp"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/run_common.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/random_arch.hpp"
#include "dsonas/model/supergraph.hpp"

extern char** environ;

namespace dsonas {
namespace {

const char* kDeriveUsage =
    "usage: dsonas derive --run DIR|FILE.h5 --out ARCH.json [--dot ARCH.dot] [--png ARCH.png] [--width C]\n"
    "  --run    a search run folder (its model.h5 is used) or a model/checkpoint .h5 file\n"
    "  --out    the architecture JSON (format dsonas-architecture)\n"
    "  --dot    Graphviz picture of the blocks (default: --out with .dot)\n"
    "  --png    also render the DOT with Graphviz 'dot -Tpng' (skipped with a warning if 'dot' is missing)\n"
    "  --width  stem width C of the derived network; stage widths scale by C / search stem width\n"
    "           (default: the search width)\n"
    "exit codes: 0 done, 2 bad usage (nothing written), 3 model/checkpoint file unusable\n"
    "\n"
    "usage: dsonas derive --random K --like ARCH.json --out DIR [--seed S] [--target-macs M] [--tolerance T]\n"
    "  K random architectures of the same cost as ARCH.json (model/random_arch.hpp): per normal block\n"
    "  the same number of live λ entries at uniformly random positions, §6.1 applied, the reductions'\n"
    "  branches as searched, the width chosen for the MACs of ARCH.json (or M) within ±T (default\n"
    "  0.02); refused draws are redrawn and counted.  Writes DIR/random_001.json + .dot, …;\n"
    "  sample k depends on (S, k) only (default S = 1).\n";

std::string read_head(const std::string& p, size_t n) {
  std::ifstream f(p, std::ios::binary);
  std::string s(n, '\0');
  f.read(&s[0], static_cast<std::streamsize>(n));
  s.resize(static_cast<size_t>(f.gcount()));
  return s;
}

/// Refuses (exit 2) an output path that exists and was not written by derive.
void check_output(const std::string& p, const std::string& what, const std::string& signature) {
  bool dir = false;
  if (!path_exists(p, &dir)) {
    const size_t slash = p.find_last_of('/');
    const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
    bool pdir = false;
    if (!path_exists(parent, &pdir) || !pdir)
      fail_usage(str("derive: ", what, " ", p, ": folder ", parent, " does not exist"));
    return;
  }
  if (dir || read_head(p, 4096).find(signature) == std::string::npos)
    fail_usage(str("derive: ", what, " ", p, " exists and was not written by dsonas derive; refusing to overwrite it"));
}

/// Writes `text` to p atomically (exit 1 with the errno text on error).
void write_atomic(const std::string& p, const std::string& text) { write_file_atomically(p, text.data(), text.size()); }

/// Full path of `prog` on $PATH, or "".
std::string find_on_path(const std::string& prog) {
  const char* env = std::getenv("PATH");
  std::string path = env ? env : "";
  size_t b = 0;
  while (b <= path.size()) {
    size_t e = path.find(':', b);
    if (e == std::string::npos) e = path.size();
    const std::string dir = path.substr(b, e - b);
    std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + prog;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    b = e + 1;
  }
  return "";
}

/// Runs `dot -Tpng -o png dotfile`; returns "" or a reason for failure.
std::string render_png(const std::string& dot, const std::string& dotfile, const std::string& png) {
  const std::string tmp = png + ".tmp";
  std::vector<std::string> args = {dot, "-Tpng", "-o", tmp, dotfile};
  std::vector<char*> argv = argv_of(args, true);
  pid_t pid = 0;
  if (posix_spawn(&pid, dot.c_str(), nullptr, nullptr, argv.data(), environ) != 0)
    return str("cannot start ", dot, ": ", std::strerror(errno));
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return str("waitpid: ", std::strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::remove(tmp.c_str());
    return str(dot, " failed (status ", status, ")");
  }
  if (std::rename(tmp.c_str(), png.c_str()) != 0) {
    std::remove(tmp.c_str());
    return str("cannot write ", png, ": ", std::strerror(errno));
  }
  return "";
}

std::string percent(double part, double whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}

std::string fmt_signed_percent(double v, double ref) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.2f %%", ref > 0 ? 100.0 * (v - ref) / ref : 0.0);
  return buf;
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.3f G", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.3f M", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.3f k", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

/// derive --random: K samples like `like` into folder `out`.
int derive_random(int k, const std::string& like, const std::string& out, uint64_t seed, double target_macs,
                  double tolerance) {
  bool is_dir = false;
  if (!path_exists(like, &is_dir) || is_dir) fail_usage(str("derive: --like ", like, ": no such architecture JSON"));
  std::ifstream f(like, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  const Architecture found = Architecture::from_json(ss.str(), like);
  if (path_exists(out, &is_dir) && !is_dir) fail_usage(str("derive: --out ", out, " exists and is not a folder"));
  std::vector<std::string> names;
  for (int i = 1; i <= k; ++i) {
    char b[32];
    std::snprintf(b, sizeof b, "random_%03d", i);
    names.push_back(str(out, "/", b));
    if (is_dir) {
      check_output(names.back() + ".json", "--out", "\"format\": \"dsonas-architecture\"");
      check_output(names.back() + ".dot", "--out", "// dsonas-architecture DOT");
    }
  }
  RandomArchOptions o;
  o.target_macs = target_macs;
  o.tolerance = tolerance;
  std::vector<RandomArch> rs;
  rs.reserve(static_cast<size_t>(k));
  for (int i = 0; i < k; ++i) rs.push_back(sample_random_like(found, seed, i, o));  // all drawn before any write
  if (!is_dir && ::mkdir(out.c_str(), 0755) != 0) fail_usage(str("derive: --out ", out, ": ", std::strerror(errno)));
  const double target = target_macs > 0 ? target_macs : found.macs();
  std::cout << "derive --random: " << k << " architectures like " << like << " (" << found.live_ops() << " live ops, "
            << human(found.macs()) << " MACs), seed " << seed << ", target " << human(target) << " MACs ± "
            << tolerance * 100 << " %\n";
  for (int i = 0; i < k; ++i) {
    const RandomArch& r = rs[static_cast<size_t>(i)];
    write_atomic(names[static_cast<size_t>(i)] + ".json", r.arch.to_json());
    write_atomic(names[static_cast<size_t>(i)] + ".dot", r.arch.to_dot());
    std::cout << names[static_cast<size_t>(i)] << ".json: width " << r.width << ", " << r.arch.live_ops()
              << " live ops, " << human(r.arch.macs()) << " MACs (" << fmt_signed_percent(r.arch.macs(), target)
              << "), " << human(r.arch.params()) << " params; redraws: " << r.block_redraws << " blocks, "
              << r.width_redraws << " widths\n";
  }
  return kExitOk;
}

}  // namespace

int run_derive(int argc, char** argv) {
  std::string run, out, dot, png, like;
  int width = 0, random = 0;
  uint64_t seed = 1;
  double target_macs = 0, tolerance = 0.02;
  double random_d = 0, seed_d = 1;
  CommandArgs args("derive", kDeriveUsage, "dsonas derive --help");
  args.text("--run", &run)
      .text("--like", &like)
      .number("--random", &random_d, 1, 999)
      .number("--seed", &seed_d, 0, 9e15)
      .number("--target-macs", &target_macs, 1, 1e18)
      .number("--tolerance", &tolerance, 1e-6, 1)
      .text("--out", &out)
      .text("--dot", &dot)
      .text("--png", &png)
      .integer("--width", &width, 1, 1000000);
  if (!args.parse(argc, argv)) return kExitOk;
  random = static_cast<int>(random_d);
  seed = static_cast<uint64_t>(seed_d);
  if (random > 0 || !like.empty()) {
    if (random <= 0 || like.empty()) fail_usage("derive: --random K and --like ARCH.json go together");
    if (!run.empty() || !dot.empty() || !png.empty() || width > 0)
      fail_usage("derive: --random takes --like, --out (a folder), --seed, --target-macs, --tolerance only");
    if (out.empty()) fail_usage("derive: --out is required (the folder for the random architectures)");
    return derive_random(random, like, out, seed, target_macs, tolerance);
  }
  if (run.empty()) fail_usage("derive: --run is required (a search run folder or a model/checkpoint .h5 file)");
  if (out.empty()) fail_usage("derive: --out is required (the architecture JSON to write)");
  if (dot.empty()) {
    const size_t slash = out.find_last_of('/'), dotpos = out.find_last_of('.');
    dot =
        (dotpos != std::string::npos && (slash == std::string::npos || dotpos > slash) ? out.substr(0, dotpos) : out) +
        ".dot";
  }
  if (dot == out || (!png.empty() && (png == out || png == dot)))
    fail_usage("derive: --out, --dot and --png must be different files");

  // Resolve the input before touching any output.
  bool is_dir = false;
  if (!path_exists(run, &is_dir)) fail_usage(str("derive: --run ", run, ": no such file or folder"));
  std::string file = run;
  if (is_dir) {
    file = (run.back() == '/' ? run : run + "/") + "model.h5";
    if (!path_exists(file)) {
      std::string hint;
      const std::string latest = read_head(run + "/ckpt/latest", 256);
      if (!latest.empty())
        hint = str("; to derive from the newest checkpoint pass --run ", run, "/ckpt/",
                   latest.substr(0, latest.find_first_of("\r\n")));
      throw Error(kExitCheckpoint, str("derive: ", run, ": run folder has no model.h5 (stage not finished?)", hint));
    }
  }
  check_output(out, "--out", "\"format\": \"dsonas-architecture\"");
  check_output(dot, "--dot", "// dsonas-architecture DOT");
  if (!png.empty()) check_output(png, "--png", "\x89PNG");

  const std::string fmt = read_root_attr(file, "format");
  if (fmt != "dsonas-model" && fmt != "dsonas-checkpoint")
    throw Error(kExitCheckpoint, str(file, ": not a dsonas model or checkpoint file (format attribute '", fmt, "')"));
  const SearchSpace sp = SearchSpace::from_json(read_root_attr(file, "space"), file);
  auto be = make_backend(Device::CPU, 1);
  Supergraph g(sp, *be, 0);
  TrainState ts;
  load_model_file(file, g, true, fmt == "dsonas-checkpoint" ? &ts : nullptr);

  const SearchSpace target = scale_width(sp, width);
  Architecture arch = Architecture::from_lambda(target, g.lambda().data(), g.mask().data());
  arch.source = run;
  arch.stage = read_root_attr(file, "stage");
  arch.step = read_root_i64(file, "step");
  if (arch.stage == "pretrain")
    arch.extra_warnings.push_back(
        "source is a pretrain model (lambda not searched): the derived network is the dense supernet");

  write_atomic(out, arch.to_json());
  write_atomic(dot, arch.to_dot());
  std::string png_note;
  if (!png.empty()) {
    const std::string dot_bin = find_on_path("dot");
    if (dot_bin.empty()) {
      std::cerr << "dsonas: derive: warning: Graphviz 'dot' not found on PATH; " << png << " not written" << std::endl;
    } else {
      const std::string why = render_png(dot_bin, dot, png);
      if (why.empty())
        png_note = ", " + png;
      else
        std::cerr << "dsonas: derive: warning: " << why << "; " << png << " not written" << std::endl;
    }
  }

  // Summary.
  const std::vector<int64_t> per = arch.survivors_per_type(), lev = arch.survivors_per_level();
  std::string ops, levels;
  for (size_t j = 0; j < per.size(); ++j) ops += str(j ? ", " : "", op_name(target.ops[j]), " ", per[j]);
  for (size_t l = 0; l < lev.size(); ++l) levels += str(l ? ", " : "", "l", l + 1, " ", lev[l]);
  const double macs = arch.macs(), mfull = arch.macs_full(), params = arch.params(), pfull = arch.params_full();
  const std::vector<std::string> warns = arch.warnings();
  std::cout << "derive: " << file << " (" << fmt << ", stage " << arch.stage << ", step " << arch.step << ")"
            << ", width " << target.stem_channels << " (stages";
  for (int w : target.widths) std::cout << " " << w;
  std::cout << ")\n"
            << "live ops: " << arch.live_ops() << " (" << ops << ") of "
            << static_cast<int64_t>(target.num_normal_blocks()) * target.levels * target.N()
            << "; per level: " << levels << "\n"
            << "MACs: " << human(macs) << " of " << human(mfull) << " dense (" << percent(macs, mfull) << ")\n"
            << "params: " << human(params) << " of " << human(pfull) << " dense (" << percent(params, pfull) << ")\n";
  if (warns.empty()) std::cout << "warnings: none\n";
  for (const std::string& w : warns) std::cout << "warning: " << w << "\n";
  std::cout << "wrote " << out << ", " << dot << png_note << "\n";
  return kExitOk;
}

}  // namespace dsonas

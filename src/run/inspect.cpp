// inspect.cpp — see inspect.hpp.
#include "dsonas/run/inspect.hpp"

#include <cstdint>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <string>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/network_file.hpp"
#include "dsonas/io/seal.hpp"
#include "dsonas/io/trajectory.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/model/prune.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/config.hpp"

namespace dsonas {
namespace {

std::string summary_counts(const SearchSpace& sp, Supergraph& g) {
  ZeroCount z = count_zero(g.lambda().data(), g.lambda().size());
  int64_t masked = 0;
  for (uint8_t m : g.mask()) masked += m == 0;
  std::vector<int64_t> per = live_ops_per_type(sp, g.lambda().data(), g.mask().data());
  std::string ops;
  for (size_t j = 0; j < per.size(); ++j) ops += str(j ? ", " : "", op_name(sp.ops[j]), " ", per[j]);
  const double live = live_macs(sp, g.lambda().data(), g.mask().data()), full = full_macs(sp);
  return str("λ: ", z.zero, " of ", z.total, " exactly zero (", masked, " pruned)\n", "live ops: ", g.live_ops(), " (",
             ops, "), live edges ", g.live_edges(), "\n", "live MACs: ", live / 1e6, " M of ", full / 1e6, " M (",
             100.0 * live / full, " %)\n");
}

/// `--diff`: the space (or arch) and config differences of two dsonas files.
void print_diff(const std::string& path, const std::string& other) {
  const auto a = ini_map(read_root_attr(path, "config")), b = ini_map(read_root_attr(other, "config"));
  // a network file holds its architecture where model files hold their space
  auto space_of = [](const std::string& f) {
    const std::string s = read_root_attr(f, "space");
    return s.empty() ? read_root_attr(f, "arch") : s;
  };
  const std::string sa = space_of(path), sb = space_of(other);
  std::cout << "differences against " << other << ":\n";
  int n = 0;
  if (sa != sb) {
    std::cout << "  space: " << sa << "\n     vs: " << sb << "\n";
    ++n;
  }
  std::map<std::string, std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  for (const auto& kv : all) {
    auto ia = a.find(kv.first), ib = b.find(kv.first);
    const std::string va = ia == a.end() ? "(absent)" : ia->second, vb = ib == b.end() ? "(absent)" : ib->second;
    if (va != vb) {
      std::cout << "  " << kv.first << ": " << va << " vs " << vb << "\n";
      ++n;
    }
  }
  if (!n) std::cout << "  none\n";
}

/// "written by: dsonas 0.6.0 (commit …)" and the build and library lines under it,
/// from the file's dsonas_version attribute (absent in files of dsonas < 0.6.0).
std::string written_by(const std::string& path) {
  const std::string v = read_root_attr(path, "dsonas_version");
  if (v.empty()) return "written by: not recorded (a file written before dsonas 0.6.0)\n";
  std::string o = "written by: ";
  for (size_t i = 0; i < v.size(); ++i) {
    o += v[i];
    if (v[i] == '\n' && i + 1 < v.size()) o += "  ";
  }
  if (o.back() != '\n') o += '\n';
  return o;
}

}  // namespace

int run_inspect(int argc, char** argv) {
  std::string path, other;
  CommandArgs args("inspect", "usage: dsonas inspect FILE.h5 [--diff OTHER.h5]\n",
                   "usage: dsonas inspect FILE.h5 [--diff OTHER.h5]");
  args.positional(&path).text("--diff", &other);
  if (!args.parse(argc, argv)) return kExitOk;
  if (path.empty()) fail_usage("inspect: a file is required (usage: dsonas inspect FILE.h5 [--diff OTHER.h5])");
  const std::string fmt = read_root_attr(path, "format");
  if (fmt == "dsonas-network" || fmt == "dsonas-network-checkpoint") {  // retrain (io/network_file.hpp)
    std::cout << describe_network_file(path) << describe_seal(path) << written_by(path);
    if (!other.empty()) print_diff(path, other);
    return kExitOk;
  }
  if (fmt != "dsonas-model" && fmt != "dsonas-checkpoint" && fmt != "dsonas-trajectory")
    throw Error(kExitCheckpoint, str(path, ": not a dsonas file (format attribute '", fmt, "')"));
  const SearchSpace sp = SearchSpace::from_json(read_root_attr(path, "space"), path);
  auto be = make_backend(Device::CPU, 1);
  Supergraph g(sp, *be, 0);
  std::cout << path << ": " << fmt << "\n"
            << describe_seal(path) << written_by(path) << "space: " << sp.to_json() << "\n";
  if (fmt == "dsonas-trajectory") {
    Trajectory tr(path, sp.to_json(), g.lambda_groups());
    tr.load(std::numeric_limits<int64_t>::max());
    const auto& r = tr.records();
    std::cout << "records: " << r.size();
    if (!r.empty()) {
      std::cout << ", steps " << r.front().step << " .. " << r.back().step;
      if (r.front().images >= 0) std::cout << ", training images " << r.front().images << " .. " << r.back().images;
      std::cout << "\n"
                << "zero λ: " << r.front().zero_lambda << " → " << r.back().zero_lambda << " of " << g.lambda().size()
                << "; live MACs " << r.front().live_macs / 1e6 << " M → " << r.back().live_macs / 1e6
                << " M; last loss " << r.back().loss << ", accuracy " << r.back().acc;
      if (r.back().revivals >= 0) std::cout << "; " << r.back().revivals << " revivals (reference pruning schedule)";
    }
    std::cout << "\n";
  } else {
    TrainState ts;
    load_model_file(path, g, true, fmt == "dsonas-checkpoint" ? &ts : nullptr);
    std::cout << "stage: " << read_root_attr(path, "stage") << "\n" << summary_counts(sp, g);
    if (fmt == "dsonas-checkpoint") {
      std::cout << "position:";
      for (const auto& kv : ts.counters) std::cout << " " << kv.first << "=" << kv.second;
      std::cout << "\n";
    }
  }
  if (!other.empty()) print_diff(path, other);
  return kExitOk;
}

}  // namespace dsonas

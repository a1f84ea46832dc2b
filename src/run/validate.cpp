// validate.cpp — `dsonas validate` (see validate.hpp).
//
// Design: every reader's own checks are reused (load_idx, check_cifar10_file,
// validate_imagenet_dir), so validate accepts exactly what training accepts;
// each file's problem is caught and becomes a BAD line instead of ending the
// run, so one pass lists every bad file.
#include "dsonas/run/validate.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>

#include "dsonas/core/error.hpp"
#include "dsonas/data/cifar.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/imagenet_loader.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/network_file.hpp"
#include "dsonas/model/network.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/run_common.hpp"
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "dsonas/backend/cuda_probe.hpp"  // host-only declarations, no CUDA header
#endif

namespace dsonas {
namespace {

FileCheck bad_line(const std::string& path, const std::string& role, const std::string& msg) {
  FileCheck f;
  f.path = path, f.role = role, f.ok = false, f.detail = msg;
  return f;
}

FileCheck ok_line(const std::string& path, const std::string& role, const std::string& detail) {
  FileCheck f;
  f.path = path, f.role = role, f.detail = detail;
  return f;
}

/// The images must fit the configured search space (the check load_data does).
void check_shape(ValidateReport& r, const RunConfig& cfg, const std::string& what, int c, int h, int w, int classes) {
  const SearchSpace& s = cfg.space;
  if (s.in_channels != c || s.in_height != h || s.in_width != w)
    r.files.push_back(bad_line("config", "space.input",
                               str("space.input: ", s.in_channels, "x", s.in_height, "x", s.in_width, " but ", what,
                                   " gives ", c, "x", h, "x", w, " images")));
  if (classes > s.classes)
    r.files.push_back(bad_line("config", "space.classes",
                               str("space.classes: ", s.classes, " but ", what, " has ", classes, " classes")));
}

std::string class_range(const ImageSet& s) {
  const std::vector<int64_t> h = s.class_histogram();
  const auto mm = std::minmax_element(h.begin(), h.end());
  return str(s.n, " labels in [0, ", s.classes, "), ", *mm.first, "..", *mm.second, " per class");
}

bool dir_ok(ValidateReport& r, const std::string& dir, const std::string& role, const std::string& hint) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    r.files.push_back(bad_line(dir, role, str("data: ", dir, " (", role, "): ", std::strerror(errno), "; ", hint)));
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    r.files.push_back(bad_line(dir, role, str("data: ", dir, " (", role, "): not a directory")));
    return false;
  }
  return true;
}

void validate_fmnist(ValidateReport& r, const RunConfig& cfg) {
  if (!dir_ok(r, cfg.data_dir, "Fashion-MNIST directory",
              "install Debian's dataset-fashion-mnist or set data.dir to the IDX files"))
    return;
  bool shape_done = false;
  for (bool train : {true, false}) {
    const IdxPair f = fashion_mnist_files(cfg.data_dir, train);
    const std::string role = train ? "train" : "test";
    try {
      const ImageSet s = load_idx(f.images, f.labels, 10, role);
      r.files.push_back(ok_line(f.images, role + " images", str(s.n, " images ", s.h, "x", s.w)));
      r.files.push_back(ok_line(f.labels, role + " labels", class_range(s)));
      if (!shape_done) check_shape(r, cfg, "Fashion-MNIST", s.c, s.h, s.w, s.classes), shape_done = true;
    } catch (const Error& e) {
      // the message names the file at fault (the labels file, or else the images file)
      const std::string msg = e.what();
      const bool lab = msg.find(f.labels) != std::string::npos &&
                       (msg.find(f.images) == std::string::npos || msg.find(f.labels) < msg.find(f.images));
      r.files.push_back(bad_line(lab ? f.labels : f.images, role + (lab ? " labels" : " images"), msg));
    }
  }
}

void validate_cifar10(ValidateReport& r, const RunConfig& cfg) {
  if (!dir_ok(r, cfg.data_dir, "CIFAR-10 directory",
              "download the binary version and set data.dir to its cifar-10-batches-bin folder"))
    return;
  for (bool train : {true, false}) {
    const std::vector<std::string> files = cifar10_files(cfg.data_dir, train);
    for (size_t k = 0; k < files.size(); ++k) {
      const std::string role = train ? str("CIFAR-10 train batch ", k + 1) : std::string("CIFAR-10 test batch");
      try {
        const int64_t n = check_cifar10_file(files[k], role);
        r.files.push_back(ok_line(files[k], role, str(n, " records of 3x32x32, labels in [0, 10)")));
      } catch (const Error& e) {
        r.files.push_back(bad_line(files[k], role, e.what()));
      }
    }
  }
  check_shape(r, cfg, "CIFAR-10", kCifarChannels, kCifarSide, kCifarSide, kCifarClasses);
}

void validate_imagenet(ValidateReport& r, const RunConfig& cfg) {
  std::vector<FileCheck> v = validate_imagenet_dir(cfg.data_dir, cfg.threads);
  const bool manifest_ok = !v.empty() && v[0].ok;
  r.files.insert(r.files.end(), v.begin(), v.end());
  if (manifest_ok) {
    const Manifest m = read_manifest(cfg.data_dir);
    const ImageNetAugment a = imagenet_train_augment();
    check_shape(r, cfg, str("the ImageNet loader (", a.size, "x", a.size, " crops)"), 3, a.size, a.size,
                static_cast<int>(m.classes.size()));
  }
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// One stage folder: the checkpoint `--resume` would load, with the same
/// checks in the same order (structural fields, then the weights loading into
/// the model the configuration builds), except that another world size is
/// reported instead of refused (validate runs as one process).
void validate_stage_resume(ValidateReport& r, const std::string& folder, const std::vector<std::string>& args) {
  const std::vector<std::string> cands = checkpoint_candidates(folder);
  if (cands.empty()) {
    r.files.push_back(ok_line(folder, "resume", "no checkpoint: --resume would start from the beginning"));
    return;
  }
  std::string notes;
  for (const std::string& c : cands) {
    std::string was;
    try {
      was = read_root_attr(c, "structural");
    } catch (const Error& e) {
      notes += str("; ", c, " skipped (", e.what(), ")");
      continue;
    }
    const std::string stage = structural_field(was, "stage");
    if (stage != "pretrain" && stage != "search" && stage != "retrain") {
      notes += str("; ", c, " skipped (structural: unknown stage '", stage, "')");
      continue;
    }
    // the configuration as that stage's command resolves it ([retrain] batch, …)
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--out", folder});  // required by the stage commands; nothing is written
    if (stage == "retrain") a.insert(a.end(), {"--arch", "baseline"});  // required there; not compared
    std::vector<char*> av = argv_of(a);
    const RunConfig cfg = parse_config(stage, static_cast<int>(av.size()), av.data());
    int world = 0;
    try {
      RunConfig any = cfg;
      any.allow_world_size_change = true;
      world = checkpoint_world_size(any, c, was, 1);
      check_structural(c, was, structural_fields(cfg, stage.c_str(), world), {"world_size"});
    } catch (const Error& e) {  // resume refuses the run for good
      r.files.push_back(bad_line(c, "resume", e.what()));
      return;
    }
    try {
      TrainState ts;
      std::unique_ptr<Backend> be = make_backend(Device::CPU, 1);
      if (stage == "retrain") {
        Network net(read_network_arch(c), *be, cfg.seed, NetworkOptions::from_string(read_root_attr(c, "options"), c));
        load_network_file(c, net, &ts);
      } else {
        Supergraph g(cfg.space, *be, cfg.seed);
        load_model_file(c, g, true, &ts);
      }
      r.files.push_back(ok_line(c, "resume",
                                str(stage, " step ", ts.counters["step"], ts.counters["finished"] ? " (finished)" : "",
                                    ", written by ", world, " rank", world > 1 ? "s" : "",
                                    world > 1 ? str(": resume with ", world, " ranks or --allow-world-size-change")
                                              : std::string(": resume with 1 rank or --allow-world-size-change"),
                                    notes)));
      return;
    } catch (const Error& e) {
      if (cfg.strict_resume) {
        r.files.push_back(bad_line(c, "resume", str(e.what(), " (--strict-resume: no fallback)")));
        return;
      }
      notes += str("; newer ", c, " skipped (", e.what(), ")");
    }
  }
  r.files.push_back(bad_line(folder, "resume", str(folder, ": no checkpoint loads", notes)));
}

}  // namespace

void validate_resume(ValidateReport& r, const std::string& dir, const std::vector<std::string>& args) {
  if (!is_dir(dir)) {
    r.files.push_back(bad_line(dir, "resume", str("--resume: ", dir, " is not a folder")));
    return;
  }
  // a stage folder, or a pipeline folder holding stage folders
  std::vector<std::string> folders;
  if (is_dir(dir + "/ckpt")) folders.push_back(dir);
  for (const char* sub : {"pretrain", "search", "retrain", "baseline"})
    if (is_dir(str(dir, "/", sub, "/ckpt"))) folders.push_back(str(dir, "/", sub));
  if (folders.empty()) {
    r.files.push_back(ok_line(dir, "resume", "no checkpoint folder: --resume would start from the beginning"));
    return;
  }
  for (const std::string& f : folders) validate_stage_resume(r, f, args);
}

int ValidateReport::bad() const {
  return static_cast<int>(std::count_if(files.begin(), files.end(), [](const FileCheck& f) { return !f.ok; }));
}

std::string ValidateReport::first_error() const {
  for (const FileCheck& f : files)
    if (!f.ok) return f.detail;
  return "";
}

ValidateReport validate_data(const RunConfig& cfg) {
  ValidateReport r;
  try {
    if (cfg.dataset == "fmnist")
      validate_fmnist(r, cfg);
    else if (cfg.dataset == "cifar10")
      validate_cifar10(r, cfg);
    else if (cfg.dataset == "imagenet")
      validate_imagenet(r, cfg);
    else if (cfg.dataset == "synthetic")
      r.files.push_back(ok_line("(synthetic)", "data", "generated in memory; no files to check"));
    else
      r.files.push_back(bad_line("config", "data.dataset", str("data.dataset: unknown dataset '", cfg.dataset, "'")));
  } catch (const Error& e) {  // a problem outside any one file
    r.files.push_back(bad_line(cfg.data_dir, "data", e.what()));
  }
  return r;
}

int run_validate(int argc, char** argv) {
  // --resume DIR is validate's own (the training commands' --resume is a switch)
  std::vector<std::string> args;
  std::string resume_dir;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--resume") {
      if (i + 1 >= argc) fail_usage("--resume: give the run folder to check (validate --resume DIR)");
      resume_dir = argv[++i];
    } else if (a.compare(0, 9, "--resume=") == 0) {
      resume_dir = a.substr(9);
    } else {
      args.push_back(a);
    }
  }
  std::vector<char*> av = argv_of(args);
  const RunConfig cfg = parse_config("validate", static_cast<int>(av.size()), av.data());
  std::cout << "validate: data.dataset = " << cfg.dataset << ", data.dir = " << cfg.data_dir << "\n";
  ValidateReport r = validate_data(cfg);
  if (cfg.device == "cuda") {
    // a binary without CUDA cannot run the job anywhere; a machine without a
    // GPU (a login node) is only noted: the job's nodes are what matters
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
    std::string why;
    const int n = cuda_device_count(&why);
    std::cout << "note: --device cuda (gpu-math " << cfg.gpu_math << "): "
              << (n > 0 ? str(n, " usable GPU", n > 1 ? "s" : "", " here")
                        : str("no usable GPU here (", why, "); fine on a login node, every rank of the job needs one"))
              << "\n";
#else
    FileCheck f;
    f.path = "--device";
    f.role = "device";
    f.ok = false;
    f.detail = "--device cuda: this dsonas was built without CUDA (rebuild with USE_CUDA=1)";
    r.files.push_back(f);
#endif
  }
  if (!resume_dir.empty()) validate_resume(r, resume_dir, args);
  for (const FileCheck& f : r.files) {
    if (f.ok)
      std::cout << "ok   " << f.path << " (" << f.role << "): " << f.detail << "\n";
    else
      std::cout << "BAD  " << f.detail << "\n";
  }
  const int bad = r.bad();
  std::cout << "validate: " << r.files.size() << " checked, " << bad << " bad" << std::endl;
  if (bad > 0)
    throw Error(kExitUsage, r.first_error() + (bad > 1 ? str(" (and ", bad - 1, " more problems, listed above)") : ""));
  return kExitOk;
}

}  // namespace dsonas

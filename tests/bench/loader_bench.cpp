// loader_bench.cpp — ImageNet loader throughput: packs a generated set of
// ImageNet-sized JPEGs (default 500×375, quality 90, 4:2:0 — about the size of
// an average ImageNet photo) in a temporary folder, then measures images/s of
// ShardLoader (training augmentation, §7.2) for each worker-thread count, of
// ShardEvalIterator, and of plain full-size decoding on one thread, as the
// median of several runs.  Prints one JSON line (and writes it to --json).
//
//   build/tests/loader_bench [--images 256] [--width 500] [--height 375]
//       [--batch 32] [--batches 6] [--runs 5] [--workers 1,2] [--json FILE]
//
// The pixels are synthetic (smooth colour fields, edges, texture and noise,
// tuned so that files are ~100–130 KB like real ImageNet JPEGs); decoding
// speed depends mostly on the file size and the image size.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/imagenet_loader.hpp"
#include "dsonas/data/jpeg.hpp"

using namespace dsonas;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// CPU seconds used by the whole process so far (all threads).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<uint8_t> synthetic_photo(int w, int h, uint64_t seed) {
  Rng r(seed, 1);
  const double f1 = 0.01 + 0.03 * r.uniform_double(), f2 = 0.02 + 0.05 * r.uniform_double();
  const double ph = 6.283 * r.uniform_double();
  const double cx = w * r.uniform_double(), cy = h * r.uniform_double(), rad = 40 + 100 * r.uniform_double();
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const bool inside = (x - cx) * (x - cx) + (y - cy) * (y - cy) < rad * rad;  // an object with an edge
      for (int c = 0; c < 3; ++c) {
        double v = 110 + 60 * std::sin(f1 * x + ph + c) * std::cos(f2 * y - c) + (inside ? 50 - 30 * c : 0);
        v += 18 * std::sin(0.9 * x + 1.3 * y + c) * std::sin(0.35 * y * (c + 1));  // texture
        v += 17 * r.normal();                                                      // sensor noise
        px[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>(std::min(255.0, std::max(0.0, v)));
      }
    }
  return px;
}

void write_file(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) fail_usage("loader_bench: cannot write " + p);
}

void remove_tree(const std::string& p) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = ::opendir(p.c_str())) {
      while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") remove_tree(p + "/" + n);
      }
      ::closedir(d);
    }
    ::rmdir(p.c_str());
  } else {
    ::unlink(p.c_str());
  }
}

std::string fmt(double v, int prec = 1) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  int images = 256, width = 500, height = 375, batch = 32, batches = 6, runs = 5;
  std::vector<int> workers = {1, 2};
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "loader_bench: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--images")
      images = std::atoi(val().c_str());
    else if (a == "--width")
      width = std::atoi(val().c_str());
    else if (a == "--height")
      height = std::atoi(val().c_str());
    else if (a == "--batch")
      batch = std::atoi(val().c_str());
    else if (a == "--batches")
      batches = std::atoi(val().c_str());
    else if (a == "--runs")
      runs = std::atoi(val().c_str());
    else if (a == "--json")
      json = val();
    else if (a == "--workers") {
      workers.clear();
      std::stringstream ss(val());
      for (std::string t; std::getline(ss, t, ',');) workers.push_back(std::atoi(t.c_str()));
    } else {
      std::cerr << "usage: loader_bench [--images N] [--width W] [--height H] [--batch B] [--batches K] [--runs R]"
                   " [--workers 1,2] [--json FILE]\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (images < batch || batch < 1 || batches < 1 || runs < 1 || width < 16 || height < 16 || workers.empty()) {
    std::cerr << "loader_bench: bad sizes (need images >= batch >= 1, batches, runs >= 1, sides >= 16)\n";
    return 2;
  }
  const char* tmpenv = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmpenv && *tmpenv ? tmpenv : "/tmp") + "/dsonas_loader_bench_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) {
    std::perror("loader_bench: mkdtemp");
    return 1;
  }
  const std::string dir = buf.data();
  int rc = 0;
  try {
    // ---- source tree: 8 classes
    const int classes = 8;
    const std::string root = dir + "/src", out = dir + "/shards";
    ::mkdir(root.c_str(), 0755);
    ::mkdir((root + "/train").c_str(), 0755);
    double jpeg_bytes = 0;
    JpegCodec codec;
    std::vector<uint8_t> jpg;
    const auto tg = Clock::now();
    for (int k = 0; k < classes; ++k) ::mkdir((root + "/train/c" + std::to_string(k)).c_str(), 0755);
    for (int i = 0; i < images; ++i) {
      const std::vector<uint8_t> px = synthetic_photo(width, height, static_cast<uint64_t>(i));
      codec.encode(px.data(), width, height, JpegPixels::RGB, 90, jpg);
      jpeg_bytes += static_cast<double>(jpg.size());
      char name[64];
      std::snprintf(name, sizeof name, "/train/c%d/img%05d.JPEG", i % classes, i);
      write_file(root + name, jpg);
    }
    const double gen_s = seconds_since(tg);
    // ---- pack
    PackOptions po;
    po.src = root;
    po.out = out;
    po.splits = {"train"};
    po.shard_size = std::max(1, images / 4);
    const auto tp = Clock::now();
    pack_imagenet(po);
    const double pack_s = seconds_since(tp);
    ImageNetShards set(out, "train");
    const std::vector<int> list = all_indices(set.size());

    // ---- plain decoding, one thread (reference for "images/s per thread")
    std::vector<double> dec, dec_cpu;
    std::vector<uint8_t> bytes, rgb;
    for (int r = 0; r < runs; ++r) {
      const auto t = Clock::now();
      const double c0 = cpu_seconds();
      const int n = std::min(images, 64);
      for (int i = 0; i < n; ++i) {
        set.read_jpeg(i, bytes);
        int w = 0, h = 0;
        std::string msg;
        codec.decode_rgb(bytes.data(), bytes.size(), 8, rgb, &w, &h, &msg);
      }
      dec.push_back(n / seconds_since(t));
      dec_cpu.push_back(n / (cpu_seconds() - c0));
    }

    // ---- loaders
    // images/s (wall clock) and images per CPU-second (all threads; robust on a
    // shared machine: what one fully used core delivers)
    std::vector<double> per_cpu;
    auto measure = [&](auto make) {
      std::vector<double> v;
      per_cpu.clear();
      for (int r = 0; r < runs; ++r) {
        auto l = make(r);
        Batch b;
        l->next(b);  // warm-up: threads started, buffers allocated
        const auto t = Clock::now();
        const double c0 = cpu_seconds();
        for (int k = 0; k < batches; ++k) l->next(b);
        v.push_back(static_cast<double>(batches) * batch / seconds_since(t));
        per_cpu.push_back(static_cast<double>(batches) * batch / (cpu_seconds() - c0));
      }
      return v;
    };
    std::ostringstream js;
    js << "{\"bench\":\"loader\",\"images\":" << images << ",\"width\":" << width << ",\"height\":" << height
       << ",\"jpeg_kb_mean\":" << fmt(jpeg_bytes / images / 1024) << ",\"batch\":" << batch
       << ",\"batches_per_run\":" << batches << ",\"runs\":" << runs << ",\"cores\":" << ::sysconf(_SC_NPROCESSORS_ONLN)
       << ",\"generate_s\":" << fmt(gen_s, 2) << ",\"pack_img_s\":" << fmt(images / pack_s)
       << ",\"decode_only_img_s_1thread\":" << fmt(median(dec))
       << ",\"decode_only_img_per_cpu_s\":" << fmt(median(dec_cpu));
    double per_thread = 0;
    std::ostringstream cpu_js;
    js << ",\"train_img_s\":{";
    for (size_t wi = 0; wi < workers.size(); ++wi) {
      const int nw = workers[wi];
      const std::vector<double> v = measure([&](int r) {
        return std::unique_ptr<BatchSource>(new ShardLoader(
            set, Sampler(list, batch, 0, 1, 1, static_cast<uint64_t>(r)), imagenet_train_augment(), 1, 2, nw, 3));
      });
      js << (wi ? "," : "") << "\"" << nw << "\":" << fmt(median(v));
      cpu_js << (wi ? "," : "") << "\"" << nw << "\":" << fmt(median(per_cpu));
      if (nw == 1) per_thread = median(per_cpu);
      std::cerr << "loader_bench: train, " << nw << " worker(s): runs";
      for (double x : v) std::cerr << " " << fmt(x);
      std::cerr << " img/s\n";
    }
    js << "},\"train_img_per_cpu_s\":{" << cpu_js.str() << "}";
    {
      std::vector<double> v, vc;
      for (int r = 0; r < runs; ++r) {
        ShardEvalIterator it(set, list, batch, imagenet_eval_augment(), 1, 3);
        Batch b;
        it.next(b);
        const auto t = Clock::now();
        const double c0 = cpu_seconds();
        int n = 0;
        for (int k = 0; k < batches && it.next(b); ++k) n += b.n;
        v.push_back(n / seconds_since(t));
        vc.push_back(n / (cpu_seconds() - c0));
      }
      js << ",\"eval_img_s_1worker\":" << fmt(median(v)) << ",\"eval_img_per_cpu_s\":" << fmt(median(vc));
    }
    if (per_thread > 0) {
      // The paper's ImageNet search: 8 GPUs, 18 h; per GPU the W+λ steps of
      // 1.28 M images × E epochs.  Decode threads per GPU = needed img/s /
      // images per CPU-second of a 1-worker loader (one fully used core).
      const double epochs30 = 1281167.0 * 30 / (18 * 3600) / 8, epochs120 = 1281167.0 * 120 / (18 * 3600) / 8;
      js << ",\"img_per_cpu_s_1worker\":" << fmt(per_thread)
         << ",\"paper_search_img_s_per_gpu\":{\"30_epochs\":" << fmt(epochs30) << ",\"120_epochs\":" << fmt(epochs120)
         << "},\"workers_per_gpu\":{\"30_epochs\":" << fmt(epochs30 / per_thread, 2)
         << ",\"120_epochs\":" << fmt(epochs120 / per_thread, 2) << "}";
    }
    js << "}";
    std::cout << js.str() << std::endl;
    if (!json.empty()) {
      std::ofstream f(json);
      f << js.str() << "\n";
    }
  } catch (const Error& e) {
    std::cerr << "loader_bench: " << e.what() << "\n";
    rc = e.code();
  }
  remove_tree(dir);
  return rc;
}

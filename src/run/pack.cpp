// pack.cpp — `dsonas pack` (see validate.hpp and data/imagenet.hpp): option
// parsing (run/args.hpp) around pack_imagenet().
#include <exception>
#include <iostream>
#include <sstream>
#include <string>

#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/data/imagenet.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/validate.hpp"  // defines: run_pack

namespace dsonas {

namespace {

/// --max-corrupt LIMIT: "N" (a count) or "P%" (a percentage of the images listed).
void parse_max_corrupt(const std::string& text, PackOptions* o) {
  const std::string bad = str("--max-corrupt: '", text, "' is neither a count (e.g. 25) nor a percentage (e.g. 0.5%)");
  if (text.empty()) fail_usage(bad);
  if (text.back() == '%') {
    const std::string num = text.substr(0, text.size() - 1);
    if (num.empty() || num.find_first_not_of("0123456789.") != std::string::npos) fail_usage(bad);
    size_t used = 0;
    double p = -1;
    try {
      p = std::stod(num, &used);
    } catch (const std::exception&) {
      fail_usage(bad);
    }
    if (used != num.size()) fail_usage(bad);
    if (!(p >= 0 && p <= 100)) fail_usage(str("--max-corrupt: a percentage must be in [0, 100] (got ", text, ")"));
    o->max_corrupt_percent = p;
    return;
  }
  if (text.find_first_not_of("0123456789") != std::string::npos || text.size() > 18) fail_usage(bad);
  o->max_corrupt = std::stoll(text);
}

constexpr const char* kPackUsage =
    "usage: dsonas pack --src ROOT --out OUT [options]\n"
    "  Packs ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG into HDF5 shards OUT/<split>-NNNNN.h5\n"
    "  plus OUT/manifest.json (written last; classes = sorted train folder names).  Undecodable images\n"
    "  are skipped with a warning and listed in the manifest; more of them than --max-corrupt allows, or\n"
    "  any one with --strict, is an error (exit 2) and removes the shards written so far.\n"
    "  exit codes: 0 done, 2 bad usage or input, 1 write error\n"
    "options (a value follows its option or is joined to it with '='):\n"
    "  -h, --help                print this help and exit\n"
    "  --src ROOT                ROOT of the JPEG tree (required)\n"
    "  --out OUT                 output folder: new, empty, or an unfinished pack's (required)\n"
    "  --resize S (=0)           0: store the original JPEG bytes; S >= 8: images whose shorter side\n"
    "                            exceeds S are resized to S and re-encoded\n"
    "  --quality Q (=90)         JPEG quality of re-encoded images (1..100)\n"
    "  --shard-size N (=5000)    images per shard (memory while packing ~ 3x a shard)\n"
    "  --threads N (=0)          decoding threads (0 = all cores)\n"
    "  --splits LIST (=train,val)  comma-separated split folders (a missing one other than train is\n"
    "                            skipped with a note)\n"
    "  --max-corrupt LIMIT       undecodable images allowed (over all splits) before the pack fails:\n"
    "                            N (a count) or P% (of the images listed); default: 0.1% of the\n"
    "                            images, at least 10\n"
    "  --strict                  an undecodable image (or one with a libjpeg warning) is fatal\n";

}  // namespace

int run_pack(int argc, char** argv) {
  PackOptions o;
  std::string splits = "train,val", max_corrupt;
  CommandArgs args("pack", kPackUsage, "dsonas pack --help lists the options");
  args.text("--src", &o.src)
      .text("--out", &o.out)
      .integer("--resize", &o.resize, 0, 1000000)
      .integer("--quality", &o.quality, 1, 100)
      .integer("--shard-size", &o.shard_size, 1, 1000000000)
      .integer("--threads", &o.threads, 0, 100000)
      .text("--splits", &splits)
      .text("--max-corrupt", &max_corrupt)
      .flag("--strict", &o.strict);
  if (!args.parse(argc, argv)) return kExitOk;
  if (args.given("--max-corrupt")) parse_max_corrupt(max_corrupt, &o);  // "" is an error, not the default
  o.splits.clear();
  std::stringstream ss(splits);
  for (std::string tok; std::getline(ss, tok, ',');)
    if (!tok.empty()) o.splits.push_back(tok);
  o.log = &std::cout;
  // DSONAS_FAULT=pack-shard-after-data:K, pack-shard-before-rename:K (K = the
  // K-th shard written, from 0, over all splits) or pack-before-manifest:0
  // kill the process there (end-to-end tests of interrupted packs).
  int64_t shard_seq = 0;
  o.hook = [&shard_seq](const std::string& phase, const std::string&) {
    fault_point(("pack-" + phase).c_str(), phase == "before-manifest" ? 0 : shard_seq);
    if (phase == "shard-before-rename") ++shard_seq;
  };
  pack_imagenet(o);
  return kExitOk;
}

}  // namespace dsonas

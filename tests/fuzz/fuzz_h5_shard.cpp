// fuzz_h5_shard.cpp — an ImageNet pack opened as training opens it (ImageNetShards:
// the manifest, the shard's size, HDF5 structure, attributes, offsets and labels),
// then every image read (its CRC-32 checked) and decoded as the loader does.
// Input: a manifest.json template, a 0 byte, then the bytes of train-00000.h5; the
// template's @BYTES@ and @CRC@ become the shard's real size and CRC-32, so that the
// damage reaches the shard reader instead of stopping at the manifest's whole-file
// numbers.  Byte 0 of the shard part's last byte picks whether the whole-file CRC is
// also verified at open (as `dsonas validate` does).  Documented answer: exit 2.
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/imagenet_loader.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4 << 20) return 0;
  const char* p = reinterpret_cast<const char*>(data);
  const void* z = std::memchr(p, '\0', size);
  if (!z) return 0;
  const size_t cut = static_cast<size_t>(static_cast<const char*>(z) - p);
  std::string man(p, cut);
  const uint8_t* shard = data + cut + 1;
  const size_t n = size - cut - 1;
  char crc[9];
  std::snprintf(crc, sizeof crc, "%08lx", crc32(crc32(0L, Z_NULL, 0), shard, static_cast<uInt>(n)) & 0xffffffffUL);
  for (auto [key, val] : {std::pair<std::string, std::string>{"@BYTES@", std::to_string(n)}, {"@CRC@", crc}})
    for (size_t at = man.find(key); at != std::string::npos; at = man.find(key, at + val.size()))
      man.replace(at, key.size(), val);
  dsonas_fuzz::write_file("manifest.json", man.data(), man.size());
  dsonas_fuzz::write_file("train-00000.h5", shard, n);
  static const dsonas::ImageNetAugment eval = dsonas::imagenet_eval_augment();
  static std::vector<float> out(3 * 224 * 224);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage}, [&] {
    dsonas::ShardOpenOptions o;
    o.verify_files = n > 0 && (shard[n - 1] & 1);
    dsonas::ImageNetShards set(dsonas_fuzz::scratch(), "train", o);
    std::vector<uint8_t> jpeg;
    std::string err;
    for (int i = 0; i < set.size() && i < 16; ++i) {
      set.read_jpeg(i, jpeg);
      (void)set.where(i);
      dsonas::imagenet_image(jpeg.data(), jpeg.size(), eval, 1, 2, static_cast<uint64_t>(i), out.data(), &err);
    }
  });
  return 0;
}

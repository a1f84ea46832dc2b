// fuzz_h5_shard.cpp — an ImageNet pack opened as training opens it (ImageNetShards:
// the manifest, the shard's size, its metadata CRC-32, HDF5 structure, attributes,
// offsets and labels), then every image read (its CRC-32 checked) and decoded as the
// loader does.
//
// Input: a manifest.json template, a 0 byte, then the bytes of train-00000.h5.  The
// template's @BYTES@ and @CRC@ become the shard's real size and whole-file CRC-32, so
// that the damage reaches the shard reader instead of stopping at those numbers.
// Each input runs twice (as fuzz_h5_inspect does):
//  1. with the template's meta_crc32 as written — the protected path: a shard whose
//     HDF5 metadata changed is refused before libhdf5 parses it;
//  2. with @META@ (or the stored value) replaced by the CRC-32 of the damaged shard's
//     metadata, reaching the HDF5 structure checks behind it (libhdf5's own crashes
//     there go to tests/fuzz/hdf5-crashes/, replayed by make test through pass 1).
// The last byte's low bit also asks for the whole-file CRC at open (dsonas validate).
// Documented answer to bad input: exit 2.
#include <hdf5.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/imagenet_loader.hpp"
#include "fuzz_util.hpp"

namespace {

uint32_t crc(const uint8_t* p, size_t n, uint32_t c = 0) {
  return static_cast<uint32_t>(crc32(c, p, static_cast<uInt>(n)));
}
std::string hex(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}
void replace_all(std::string& s, const std::string& key, const std::string& val) {
  for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + val.size()))
    s.replace(at, key.size(), val);
}
/// The integer after `"key": ` in the template, or -1.
long long number_after(const std::string& s, const std::string& key) {
  const size_t at = s.find("\"" + key + "\": ");
  if (at == std::string::npos) return -1;
  return std::strtoll(s.c_str() + at + key.size() + 4, nullptr, 10);
}

void open_and_read(const std::string& man, const uint8_t* shard, size_t n) {
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
  DSONAS_FUZZ_NO_OPEN_HDF5_IDS();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4 << 20) return 0;
  const char* p = reinterpret_cast<const char*>(data);
  const void* z = std::memchr(p, '\0', size);
  if (!z) return 0;
  const size_t cut = static_cast<size_t>(static_cast<const char*>(z) - p);
  std::string man(p, cut);
  const uint8_t* shard = data + cut + 1;
  const size_t n = size - cut - 1;
  replace_all(man, "@BYTES@", std::to_string(n));
  replace_all(man, "@CRC@", hex(crc(shard, n)));
  open_and_read(man, shard, n);
  if (dsonas_fuzz::protected_only()) return 0;
  const long long off = number_after(man, "jpeg_offset"), len = number_after(man, "jpeg_bytes");
  if (off < 0 || len < 0 || static_cast<unsigned long long>(off) + static_cast<unsigned long long>(len) > n) return 0;
  const uint32_t meta =
      crc(shard + off + len, n - static_cast<size_t>(off + len), crc(shard, static_cast<size_t>(off)));
  const size_t at = man.find("\"meta_crc32\": \"");
  if (at == std::string::npos || at + 15 + 8 > man.size()) return 0;
  man.replace(at + 15, 8, hex(meta));
  open_and_read(man, shard, n);
  return 0;
}

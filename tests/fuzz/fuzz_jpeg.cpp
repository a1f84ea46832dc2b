// fuzz_jpeg.cpp — JPEG decoding and the ImageNet augmentation (imagenet_image: header,
// size limits, DCT-scaled decode, crop, resize, jitter), as the loader workers run it.
// Byte 0 picks the training or the evaluation pipeline.  Bad JPEG: false + a reason
// (the loader then fails with exit 2 naming the shard and image), never a crash.
#include <string>
#include <vector>

#include "dsonas/data/imagenet_loader.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 1 << 20) return 0;
  static const dsonas::ImageNetAugment train = dsonas::imagenet_train_augment(), eval = dsonas::imagenet_eval_augment();
  static std::vector<float> out(3 * 224 * 224);
  const dsonas::ImageNetAugment& a = data[0] & 1 ? eval : train;
  std::string err;
  dsonas_fuzz::expect_handled({dsonas::kExitUsage},
                              [&] { dsonas::imagenet_image(data + 1, size - 1, a, 7, 1, data[0], out.data(), &err); });
  return 0;
}

// rng.hpp — counter-based random numbers.
//
// Every random draw in dsonas is a pure function of (seed, stream, counter):
// mix64() hashes the three into 64 random bits.  A generator's whole state is
// its counter, so checkpointing it is one integer and prefetch threads can
// produce the same numbers as the main thread would, in any order.
#pragma once
#include <cmath>
#include <cstdint>

namespace dsonas {

/// SplitMix64 finaliser: a bijective 64-bit mixer with full avalanche.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// 64 random bits from (seed, stream, counter).
inline uint64_t mix64(uint64_t seed, uint64_t stream, uint64_t counter) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ counter);
}

/// Stable 64-bit hash of a string (FNV-1a), for deriving streams from names.
inline uint64_t hash_name(const char* s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
  return h;
}

/// A random stream: (seed, stream) fixed, counter advancing.
class Rng {
 public:
  Rng() = default;
  Rng(uint64_t seed, uint64_t stream, uint64_t counter = 0) : seed_(seed), stream_(stream), counter_(counter) {}
  uint64_t next_u64() { return mix64(seed_, stream_, counter_++); }
  /// Uniform in [0, 1) with 24 random bits (exact in float).
  float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform_double() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  /// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-32 for n < 2^32).
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(((next_u64() >> 32) * static_cast<uint64_t>(n)) >> 32); }
  /// Standard normal by Box-Muller (uses two draws, returns one value).
  double normal() {
    double u1 = uniform_double(), u2 = uniform_double();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; }
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }

 private:
  uint64_t seed_ = 0, stream_ = 0, counter_ = 0;
};

}  // namespace dsonas

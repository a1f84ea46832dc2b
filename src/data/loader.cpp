// loader.cpp — see loader.hpp.  Producer/consumer over a bounded deque; the
// producer owns sampler_ while it runs, the consumer owns consumer_state_;
// restore() joins the producer before touching the sampler.
#include <omp.h>
#include <utility>

#include "dsonas/core/error.hpp"
#include "dsonas/data/loader.hpp"  // defines: Loader, EvalIterator

namespace dsonas {

Loader::Loader(const ImageSet& set, Sampler sampler, Augment aug, uint64_t aug_seed, uint64_t aug_stream, bool prefetch,
               int depth)
    : set_(&set),
      sampler_(std::move(sampler)),
      aug_(std::move(aug)),
      aug_seed_(aug_seed),
      aug_stream_(aug_stream),
      prefetch_(prefetch),
      depth_(depth),
      steps_per_epoch_(sampler_.steps_per_epoch()) {
  aug_.validate(set.c);
  DSO_CHECK(depth_ >= 1, "prefetch depth ", depth_);
  DSO_CHECK(steps_per_epoch_ >= 1, "loader needs a constructed sampler");
  for (int i : sampler_.permutation(0))
    if (i < 0 || i >= set.n)
      fail_usage(str("data: sample index ", i, " is outside ", set.source, " (", set.n, " images)"));
  consumer_state_ = sampler_.state();
  if (prefetch_) start();
}

Loader::~Loader() { stop(); }

void Loader::produce(Batch& b) {
  b.state_before = sampler_.state();
  b.global_step = sampler_.global_step();
  sampler_.next(idx_, &b.epoch_end);
  b.state_after = sampler_.state();
  b.n = static_cast<int>(idx_.size());
  b.c = set_->c, b.h = set_->h, b.w = set_->w;
  b.data.resize(static_cast<size_t>(b.n) * set_->image_size());
  b.labels.resize(b.n);
  b.indices = idx_;
  make_batch(*set_, idx_, aug_, aug_seed_, aug_stream_, static_cast<uint64_t>(b.global_step), b.data.data(),
             b.labels.data(), static_cast<uint64_t>(sampler_.rank()) * static_cast<uint64_t>(sampler_.batch()));
}

void Loader::start() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = false;
    error_ = nullptr;
  }
  thread_ = std::thread(&Loader::worker, this);
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_not_full_.notify_all();
  cv_not_empty_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lk(mu_);
  while (!queue_.empty()) {
    free_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
}

void Loader::worker() {
  // One thread: an OpenMP team here would compete with the compute team of the
  // main thread for the same cores (and spin at its barriers).
  omp_set_num_threads(1);
  for (;;) {
    Batch b;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_not_full_.wait(lk, [&] { return stop_ || static_cast<int>(queue_.size()) < depth_; });
      if (stop_) return;
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    try {
      produce(b);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      error_ = std::current_exception();
      cv_not_empty_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      queue_.push_back(std::move(b));
    }
    cv_not_empty_.notify_one();
  }
}

void Loader::next(Batch& b) {
  if (!prefetch_) {
    produce(b);
    consumer_state_ = b.state_after;
    return;
  }
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_not_empty_.wait(lk, [&] { return !queue_.empty() || error_; });
    if (queue_.empty()) std::rethrow_exception(error_);
    std::swap(b, queue_.front());
    free_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  cv_not_full_.notify_one();
  consumer_state_ = b.state_after;
}

SamplerState Loader::state() const { return consumer_state_; }

void Loader::restore(const SamplerState& s) {
  sampler_.check_state(s);  // before the producer is stopped: a bad state changes nothing
  if (prefetch_) stop();
  sampler_.set_state(s);
  consumer_state_ = s;
  if (prefetch_) start();
}

// ---- evaluation ---------------------------------------------------------------

EvalIterator::EvalIterator(const ImageSet& set, std::vector<int> indices, int batch, Augment norm)
    : set_(&set), indices_(std::move(indices)), batch_(batch), norm_(std::move(norm)) {
  if (batch_ < 1) fail_usage(str("data: evaluation batch size must be >= 1, got ", batch_));
  norm_.pad = 0;
  norm_.flip = false;
  norm_.cutout = 0;
  norm_.validate(set.c);
  for (int i : indices_)
    if (i < 0 || i >= set.n)
      fail_usage(str("data: sample index ", i, " is outside ", set.source, " (", set.n, " images)"));
}

bool EvalIterator::next(Batch& b) {
  if (pos_ >= indices_.size()) return false;
  const size_t nb = std::min(static_cast<size_t>(batch_), indices_.size() - pos_);
  idx_.assign(indices_.begin() + pos_, indices_.begin() + pos_ + nb);
  b.n = static_cast<int>(nb);
  b.c = set_->c, b.h = set_->h, b.w = set_->w;
  b.data.resize(nb * set_->image_size());
  b.labels.resize(nb);
  b.indices = idx_;
  make_batch(*set_, idx_, norm_, 0, 0, 0, b.data.data(), b.labels.data());
  b.global_step = static_cast<int64_t>(pos_ / batch_);
  pos_ += nb;
  b.epoch_end = pos_ >= indices_.size();
  b.state_before = b.state_after = SamplerState{};
  return true;
}

int64_t EvalIterator::num_batches() const { return static_cast<int64_t>((indices_.size() + batch_ - 1) / batch_); }

}  // namespace dsonas

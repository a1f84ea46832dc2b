// weight_decay.cpp — see weight_decay.hpp.
#include "dsonas/model/weight_decay.hpp"

#include <string>

namespace dsonas {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Pretrain: return "pretrain";
    case Phase::Search: return "search";
    case Phase::Retrain: return "retrain";
  }
  return "?";
}

namespace {
std::string last_component(const std::string& name) {
  const size_t p = name.rfind('/');
  return p == std::string::npos ? name : name.substr(p + 1);
}
bool is_lambda_name(const std::string& name) {
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, 6, "lambda") == 0 && end - start >= 6) return true;
    start = end + 1;
  }
  return false;
}
}  // namespace

float weight_decay_for(const std::string& name, Phase phase, float wd) {
  if (is_lambda_name(name)) return 0.0f;
  const std::string last = last_component(name);
  if (last == "weight") return wd;
  if (last == "gamma" && phase != Phase::Search) return wd;
  return 0.0f;
}

}  // namespace dsonas

// pipeline.hpp — `dsonas pipeline --config C --out DIR`: pretrain → search →
// derive → retrain → eval (+ the hand-made baseline) → DIR/report.md, each stage
// resumed if its folder holds a run (design in src/run/pipeline.cpp).
#pragma once

namespace dsonas {

/// argv[0] is "pipeline"; the rest are the options every stage receives.
int run_pipeline(int argc, char** argv);

}  // namespace dsonas

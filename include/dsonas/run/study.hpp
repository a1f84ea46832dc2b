// study.hpp — `dsonas study --config C --out DIR`: does the search beat chance?
//
// One study = search(es), then the found architecture, the hand-made baseline and
// K random architectures of the same cost (model/random_arch.hpp), each retrained
// with S seeds at equal MACs and the same budget, evaluated on the test set, and a
// report with every value, per group mean, standard deviation and 95 % interval,
// Welch's t-test and Hedges' g of found vs random and found vs hand-made, and a
// verdict that says "not significant" when it is not (core/stats.hpp).
//
//   DIR/r1/{pretrain,search}, DIR/r1/arch.json   search 1 (seed = seed); r2, … with study.search-seeds
//   DIR/archs/*.json       found (found_r2, …), baseline, random_001 … at the study's MACs
//   DIR/plan.json          the retrain tasks (written once the architectures exist)
//   DIR/retrain/<task>/    one retrain each (network.h5, metrics, eval_test/eval.json)
//   DIR/study.md, study.json, study.csv, study.png (utils/study_plot.py, matplotlib)
//
// Re-running the command continues (every stage resumes; finished tasks are kept).
// Under mpirun every search and retrain is data parallel.  For Slurm
// (slurm/study.sh): --study.prepare (searches, architectures, plan), then one
// array task per retrain (--study.task N), then --study.report.
#pragma once

namespace dsonas {

/// argv[0] is "study"; the rest are the options every stage receives.
int run_study(int argc, char** argv);

}  // namespace dsonas

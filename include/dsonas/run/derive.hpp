// derive.hpp — `dsonas derive --run DIR|FILE.h5 --out ARCH.json [--dot F] [--png F]
// [--width C]`: the final architecture of a search (docs/method.md §6.3) as a
// deterministic JSON file and a Graphviz DOT picture (PNG when `dot` is on PATH),
// with per-op survivor counts, MACs / params and collapse warnings.
//
// Exit codes: 2 bad usage (missing option, path that does not exist, bad --width,
// an output path that holds something derive did not write); 3 file unusable
// (not HDF5, not a dsonas model/checkpoint, run folder without model.h5).
#pragma once

namespace dsonas {

int run_derive(int argc, char** argv);

}  // namespace dsonas

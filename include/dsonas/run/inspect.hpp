// inspect.hpp — `dsonas inspect FILE.h5 [--diff OTHER.h5]`: what a model file,
// checkpoint or λ trajectory holds (stage, step, λ sparsity, live ops and MACs,
// training position), and the configuration differences against another file.
#pragma once

namespace dsonas {

int run_inspect(int argc, char** argv);

}  // namespace dsonas

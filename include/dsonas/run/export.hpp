// export.hpp — `dsonas export`: a retrained network for use outside dsonas.
//
// `dsonas export --run DIR|FILE.h5 --format onnx|pytorch --out F [--batch N]`
//   checks the network file the way eval loads it (seal, format, architecture,
//   options, every dataset's shape and checksum, through a CPU Network), works out
//   the input normalisation of the dataset it was trained on (the one eval applies,
//   run_common's input_normalisation), and runs utils/export_net.py (found like every
//   Python tool, run/tools.hpp), which builds the inference network as a PyTorch
//   module and saves it as TorchScript (pytorch) or ONNX (onnx).  The tool writes a
//   temporary file that is renamed to F only when it succeeded, so F is never
//   partial.  An existing F is replaced only if an earlier export wrote it.
//   Exit codes: 0 done; 2 bad usage (a missing --run, a bad --format, F in a missing
//   folder or not an export); 3 the network file is unusable; 1 the tool failed (a
//   Python package missing, a write error: its message on one line).
#pragma once

namespace dsonas {

int run_export(int argc, char** argv);

}  // namespace dsonas

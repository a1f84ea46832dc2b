"""utils/check_layers.py (make check-layers) on small made-up trees: it passes a clean one
and names every kind of wrong-way include in a bad one."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "utils", "check_layers.py")


def tree(root, files):
    for rel, text in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    # the known exceptions of the real tree, so that the made-up one passes without them
    os.makedirs(os.path.join(root, "src/data"), exist_ok=True)
    with open(os.path.join(root, "src/data/imagenet_internal.hpp"), "w") as f:
        f.write('#include <hdf5.h>\n#include "../io/h5_util.hpp"\n')


def run(root):
    r = subprocess.run([sys.executable, TOOL, str(root)], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_clean_tree_passes(tmp_path):
    tree(tmp_path, {
        "include/dsonas/core/a.hpp": "#include <vector>\n",
        "include/dsonas/model/m.hpp": '#include "dsonas/core/a.hpp"\n',
        "src/model/m.cpp": '#include "dsonas/model/m.hpp"\n#include "m_private.hpp"\n',
        "src/model/m_private.hpp": "",
        "src/optim/o.cpp": '#include "dsonas/model/m.hpp"\n',
        "src/dist/c.cpp": "#include <mpi.h>\n",
        "src/run/r.cpp": '#include "dsonas/model/m.hpp"\n#include <boost/program_options.hpp>\n',
    })
    rc, out = run(tmp_path)
    assert rc == 0, out
    assert "0 violations" in out


def test_every_wrong_way_include_is_named(tmp_path):
    tree(tmp_path, {
        "include/dsonas/optim/o.hpp": "",
        "include/dsonas/io/f.hpp": "",
        "include/dsonas/model/m.hpp": "",
        "src/model/up.cpp": '#include "dsonas/optim/o.hpp"\n',           # model -> optim: up
        "src/dist/sib.cpp": '#include "dsonas/io/f.hpp"\n',              # dist -> io: sibling
        "src/model/vendor.cpp": "#include <hdf5.h>\n",                    # HDF5 outside io
        "src/run/private.cpp": '#include "../model/m_private.hpp"\n',     # another layer's private header
        "src/model/m_private.hpp": "",
        "src/core/missing.cpp": '#include "dsonas/core/nothing.hpp"\n',  # no such header
    })
    rc, out = run(tmp_path)
    assert rc == 1, out
    for want in ("src/model/up.cpp:1", "model must not include optim (a layer above it)",
                 "src/dist/sib.cpp:1", "dist must not include io (a sibling layer)",
                 "src/model/vendor.cpp:1: <hdf5.h> is owned by io, not model",
                 "src/run/private.cpp:1", "reaches into layer model's private headers",
                 "src/core/missing.cpp:1", "does not exist under include/",
                 "5 violations"):
        assert want in out, (want, out)


def test_a_stale_exception_fails(tmp_path):
    tree(tmp_path, {"include/dsonas/core/a.hpp": ""})
    os.remove(os.path.join(tmp_path, "src/data/imagenet_internal.hpp"))
    rc, out = run(tmp_path)
    assert rc == 1 and "no longer occurs: remove it from EXCEPTIONS" in out, out

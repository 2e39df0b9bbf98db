// xrmeta._core: the Python bindings of the C++ core (cpp/include/xrmeta). Each kernel releases the GIL while it
// runs; its arguments are the arrays and layouts of `xrmeta/layout.py`, checked, never copied.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_search(py::module_& m);
void bind_coldstart(py::module_& m);
void bind_insertion(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "xrmeta's compiled kernels: search, neighbour selection, mixing and insertion (cpp/)";
    bind_search(m);
    bind_coldstart(m);
    bind_insertion(m);
}

// xrmeta._core: the Python bindings of the C++ core (cpp/include/xrmeta). Each kernel releases the GIL while it
// runs; its arguments are the arrays and layouts of `xrmeta/layout.py`, checked, never copied.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <string>
#include <vector>

#include "xrmeta/layout.hpp"

namespace py = pybind11;

void bind_search(py::module_& m);
void bind_coldstart(py::module_& m);
void bind_insertion(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "xrmeta's compiled kernels: search, neighbour selection, mixing and insertion (cpp/)";
    bind_search(m);
    bind_coldstart(m);
    bind_insertion(m);
#define XRMETA_NAME(T, name) #name,
    m.def("layout_fields", [] {
        return std::map<std::string, std::vector<std::string>>{
            {"Rows", {XRMETA_ROWS_FIELDS(XRMETA_NAME)}},
            {"UpperLayout", {XRMETA_UPPER_FIELDS(XRMETA_NAME) "post"}},
            {"LeafLayout", {XRMETA_FEATURE_MAJOR_FIELDS(XRMETA_NAME) XRMETA_LEAF_OWN_FIELDS(XRMETA_NAME) "post",
                            "path_exponent"}},
            {"InsertedLayout", {XRMETA_INSERTED_FIELDS(XRMETA_NAME)}}};
    }, "The layouts' fields in the order the C++ core reads them (the NamedTuples of xrmeta/layout.py must match).");
#undef XRMETA_NAME
}

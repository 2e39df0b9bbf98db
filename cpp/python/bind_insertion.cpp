#include "convert.hpp"

namespace py = pybind11;

void bind_insertion(py::module_& m) {}

#include "convert.hpp"

namespace py = pybind11;

void bind_coldstart(py::module_& m) {}

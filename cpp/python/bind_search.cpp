#include "convert.hpp"

namespace py = pybind11;

void bind_search(py::module_& m) {}
